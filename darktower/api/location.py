"""`Location` on the API's 201 answers: the URL of the resource the request created."""

from __future__ import annotations

from typing import Any

from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response


class CreatedLocation:
    """A view mixin (before ApiView in the bases): a 201 answer carries `Location`, the created resource's path,
    built from the answer's body by `created_location`. Built from the body, not from the code path that
    created it, so an idempotent replay of the 201 (whose stored answer keeps no headers) carries it too. A
    path reference, which RFC 9110 allows: right behind any proxy, whatever host and scheme the client used."""

    def created_location(self, body: dict[str, Any]) -> str | None:
        raise NotImplementedError

    def finalize_response(self, request: Request, response: Response, *args: Any, **kwargs: Any) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]
        if response.status_code == status.HTTP_201_CREATED and isinstance(response.data, dict):
            location = self.created_location(response.data)
            if location is not None:
                response["Location"] = location
        return response
