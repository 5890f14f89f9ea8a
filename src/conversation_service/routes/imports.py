"""Import an export: ``POST /api/v1/conversations/import`` (``application/x-ndjson``)."""

from fastapi import APIRouter, Request, Response, status

from conversation_service.errors import MethodNotAllowedError
from conversation_service.models.imports import ImportOut
from conversation_service.routes.deps import CurrentUser, ResourcesDep, UoW
from conversation_service.routes.errors import problems
from conversation_service.services import importer

IMPORT_PATH = "/api/v1/conversations/import"

router = APIRouter(tags=["conversations"])


@router.post(
    IMPORT_PATH,
    responses=problems(401, 413, 415, 422, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
        }
    },
)
async def import_conversations(
    request: Request, response: Response, user: CurrentUser, uow: UoW, resources: ResourcesDep
) -> ImportOut:
    """Create an export's conversations anew for the caller (idempotent per source id): 201 when
    anything was created, 200 when every conversation had been imported before."""
    body = await request.body()
    results = await importer.import_conversations(
        uow, user, body, settings=resources.settings, agents=resources.agents
    )
    if any(result["created"] for result in results):
        response.status_code = status.HTTP_201_CREATED
    return ImportOut.model_validate({"data": results})


@router.api_route(IMPORT_PATH, methods=["GET", "PUT", "PATCH", "DELETE"], include_in_schema=False)
async def import_other_methods() -> None:
    """``import`` is no conversation id: other methods answer 405, not the 422 of a bad id."""
    raise MethodNotAllowedError("import takes POST only", headers={"Allow": "POST"})
