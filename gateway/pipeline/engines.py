"""The OpenAI-compatible engines as a backend (`upstream/backend.py`): step 3 of the pipeline
for one target. Route (`cluster/routing.py`: a managed model with no serving replica is
ensured first), narrowed to the one engine a stored response pins (`responses.py`), admit
(`protection/admission.py`: the slot is released when the reply closes), then the proxy
(`upstream/proxy.py`: a replica, its retries before the first byte, the relay); the id of a
new stored response is learned from the reply."""

from __future__ import annotations

from orchestra.tracing import Tracing

from ..cluster.routing import Router
from ..core.call import Call
from ..core.reply import Reply
from ..protection.admission import Admission, release_when_done
from ..upstream.proxy import Proxy
from .responses import PATH as RESPONSES_PATH
from .responses import StoredResponses, gone, pinned_route


class Engines:
    def __init__(
        self,
        router: Router,
        admission: Admission,
        proxy: Proxy,
        stored: StoredResponses,
        tracing: Tracing | None = None,
    ) -> None:
        self._router = router
        self._tracing = tracing or Tracing(None)
        self._admission = admission
        self._proxy = proxy
        self._stored = stored

    @property
    def name(self) -> str:
        return self._proxy.name

    def takes(self, call: Call) -> bool:
        return True  # whether a model has engines is the router's to say (an error if none)

    async def forward(self, call: Call) -> Reply:
        route = await self._router.route(call.model)
        if call.pinned is not None:
            pinned = pinned_route(route, call.pinned)
            if pinned is None:
                raise gone(StoredResponses.stored_id(call) or "")
            route = pinned
        gate = self._admission.gate(call.model)
        if gate is not None:
            with self._tracing.span("admission") as span:
                span.set_attribute("orchestra.model", call.model)
                span.set_attribute("orchestra.queued_before", gate.queued)
                await gate.acquire(self._admission.priority(call.priority))
        try:
            reply = await self._proxy.forward(call, route)
        except BaseException:
            if gate is not None:
                gate.release()
            raise
        if call.path == RESPONSES_PATH:
            reply = self._stored.learn(call, reply)
        return reply if gate is None else release_when_done(reply, gate)
