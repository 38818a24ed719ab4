"""One APIRouter per resource; `api.app` includes them."""
