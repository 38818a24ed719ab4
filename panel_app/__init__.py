"""The Panel dashboard (`panel serve panel_app/app.py`): one module per page, data only via the REST API."""
