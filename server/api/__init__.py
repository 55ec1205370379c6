"""The HTTP API: app factory in server/app.py, routes per resource in routes/, schemas in schemas/."""
