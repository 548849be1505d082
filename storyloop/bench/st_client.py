"""A browser tab's side of Streamlit's websocket, for benchmarks: run the app's script, see what it sent back.

What the frontend does, without the frontend: connect to /_stcore/stream, send a `rerun_script` BackMsg
with the widget values, read ForwardMsgs until `script_finished`. A run is timed from the request to
its end, so it counts the server's script run and the serialisation of what it sent, not a browser's
drawing. Widget ids are the server's own (read from the elements of the previous run).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

# script_finished statuses that end the run a client asked for (2, "finished early for rerun", is
# followed by the rerun's own messages).
_DONE = {ForwardMsg.FINISHED_SUCCESSFULLY, ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY}


@dataclass(frozen=True)
class Element:
    kind: str  # the Element's oneof: "button", "text_input", "alert", "markdown", ...
    id: str | None  # a widget's id, None for other elements
    text: str  # a widget's label, an alert's or a markdown's body


@dataclass
class Run:
    ms: float
    elements: list[Element] = field(default_factory=list)

    def widget(self, label: str) -> str:
        """The id of the widget labelled `label`."""
        for e in self.elements:
            if e.id and e.text == label:
                return e.id
        raise LookupError(f"no widget labelled {label!r} in this run ({[e.text for e in self.elements if e.id]})")

    def alerts(self) -> list[str]:
        return [e.text for e in self.elements if e.kind == "alert"]


def _element(msg: ForwardMsg) -> Element | None:
    if msg.WhichOneof("type") != "delta" or msg.delta.WhichOneof("type") != "new_element":
        return None
    el = msg.delta.new_element
    kind = el.WhichOneof("type")
    inner = getattr(el, kind)
    widget_id = getattr(inner, "id", "") or None
    text = getattr(inner, "label", "") or getattr(inner, "body", "")
    return Element(kind, widget_id, text)


class AppSession:
    """One tab: `await AppSession.open(url, headers)`, then `await run(...)` as often as needed."""

    def __init__(self, ws):
        self._ws = ws

    @classmethod
    async def open(cls, base_url: str, headers: dict[str, str] | None = None) -> AppSession:
        from websockets.asyncio.client import connect

        ws_url = base_url.replace("http://", "ws://").replace("https://", "wss://").rstrip("/") + "/_stcore/stream"
        ws = await connect(ws_url, subprotocols=["streamlit"], additional_headers=headers or {}, max_size=None,
                           open_timeout=60, ping_interval=None)
        return cls(ws)

    async def run(self, strings: dict[str, str] | None = None, triggers: tuple[str, ...] = ()) -> Run:
        """One script run with these text values and these buttons clicked; its elements."""
        msg = BackMsg()
        state = msg.rerun_script
        state.query_string = ""
        state.page_script_hash = ""
        for widget_id, value in (strings or {}).items():
            w = state.widget_states.widgets.add()
            w.id, w.string_value = widget_id, value
        for widget_id in triggers:
            w = state.widget_states.widgets.add()
            w.id, w.trigger_value = widget_id, True
        began = time.perf_counter()
        await self._ws.send(msg.SerializeToString())
        run = Run(0.0)
        while True:
            reply = ForwardMsg()
            reply.ParseFromString(await self._ws.recv())
            if (element := _element(reply)) is not None:
                run.elements.append(element)
            elif reply.WhichOneof("type") == "script_finished":
                if reply.script_finished == ForwardMsg.FINISHED_WITH_COMPILE_ERROR:
                    raise RuntimeError("the app's script did not compile")
                if reply.script_finished in _DONE:
                    run.ms = (time.perf_counter() - began) * 1e3
                    return run
            elif reply.WhichOneof("type") == "new_session":
                run.elements.clear()  # the script started again (st.rerun): only the last run's elements count

    async def close(self) -> None:
        await self._ws.close()
