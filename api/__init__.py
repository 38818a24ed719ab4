"""The REST API over the store (FastAPI): `uvicorn api.app:app`."""
