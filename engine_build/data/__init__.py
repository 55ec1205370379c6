"""Reference data shipped with engine_build (a package so setuptools' package-data ships its *.json)."""
