"""Request and response models of the API (pydantic; Python 3.8 typing)."""
