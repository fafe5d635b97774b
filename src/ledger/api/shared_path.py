"""A route class for paths that several routes of one router share (a resource PUT and
GET, or PUT and DELETE, at one path): its 405 lists every method of the path in `Allow`,
as HTTP (and the contract test) wants, where Starlette's names only the methods of the
first route it tried. The app holds each included router whole, so the routes sharing a
path are looked up in the router's own list (`routes`, read at request time)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute
from starlette.types import Receive, Scope, Send


def shared_path_route(routes: Callable[[], Sequence[BaseRoute]]) -> type[APIRoute]:
    class SharedPathRoute(APIRoute):
        async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
            if self.methods and scope["method"] not in self.methods and "app" in scope:
                allowed = sorted({method for route in routes()
                                  if isinstance(route, APIRoute) and route.path == self.path
                                  for method in route.methods})
                raise StarletteHTTPException(status_code=405, headers={"Allow": ", ".join(allowed)})
            await super().handle(scope, receive, send)

    return SharedPathRoute
