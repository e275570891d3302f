"""``usnav web``: the viewer's picture in a browser, over a WebSocket bridge from ZeroMQ."""
