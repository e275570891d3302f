"""Transport over real loopback sockets, with pyigtl's client/server as an independent peer."""

from __future__ import annotations

import socket
import struct
import threading

import numpy as np
import pyigtl
import pytest
from igtl_helpers import free_port, raw_message, recv_message, wait_until
from waiting import repeat_until

from usnav.errors import ConfigError
from usnav.igtl import (
    IgtlClient,
    IgtlServer,
    LinkState,
    Message,
    Point,
    PointContent,
    RawContent,
    StatusContent,
    TransformContent,
)


@pytest.fixture
def server():
    srv = IgtlServer(port=0, keepalive_s=0.2).start()
    yield srv
    srv.stop()


def test_pyigtl_client_decodes_what_our_server_sends(server):
    client = pyigtl.OpenIGTLinkClient(host="127.0.0.1", port=server.port)
    try:
        assert server.wait_for_clients(1, timeout_s=30)
        image = np.arange(3 * 4, dtype=np.uint8).reshape(3, 4)  # 3 rows × 4 columns
        ijk_to_ras = np.diag([0.2, 0.3, 1.0, 1.0])
        ijk_to_ras[:3, 3] = [5, 6, 7]
        matrix = np.eye(4)
        matrix[:3, 3] = [10, 20, 30]
        matrix[:3, :3] = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]
        server.send_image("Image_Reference", image, ijk_to_ras, timestamp=12.5)
        server.send_transform("ProbeToReference", matrix, timestamp=12.5)
        server.send_string("Text", "hello")
        server.send_points("Pts", PointContent([Point("A", position=(1.0, 2.0, 3.0))]))
        got_image = client.wait_for_message("Image_Reference", timeout=5)
        got_transform = client.wait_for_message("ProbeToReference", timeout=5)
        got_text = client.wait_for_message("Text", timeout=5)
        got_points = client.wait_for_message("Pts", timeout=5)
    finally:
        client.stop()
    # pyigtl reads (k, j, i): one slice of 3 rows × 4 columns, and the first-voxel matrix.
    assert got_image.image.shape == (1, 3, 4)
    np.testing.assert_array_equal(got_image.image[0], image)
    np.testing.assert_allclose(got_image.ijk_to_world_matrix, ijk_to_ras, atol=1e-6)
    assert got_image.timestamp == pytest.approx(12.5)
    np.testing.assert_allclose(got_transform.matrix, matrix, atol=1e-6)
    assert got_text.string == "hello"
    np.testing.assert_allclose(got_points.positions[0], [1, 2, 3])


def test_our_client_decodes_what_a_pyigtl_server_sends(restore_signals):
    port = free_port()
    peer = pyigtl.OpenIGTLinkServer(port=port, local_server=True)
    received: list[Message] = []
    client = IgtlClient("127.0.0.1", port, on_message=received.append, header_version=1)
    try:
        client.start()
        assert wait_until(peer.is_connected, 30)
        voxels = np.arange(2 * 3 * 4, dtype=np.uint16).reshape(2, 3, 4)
        ijk = np.diag([0.5, 0.5, 2.0, 1.0])
        ijk[:3, 3] = [1, 2, 3]
        image = pyigtl.ImageMessage(voxels, ijk_to_world_matrix=ijk, device_name="Vol")
        transform = pyigtl.TransformMessage(np.diag([1.0, -1, -1, 1]), device_name="AToB")
        transform.header_version = 2
        transform.metadata = {"TransformStatus": "OK", "Note": "n1"}
        for message in (image, transform, pyigtl.StringMessage("abc", device_name="S")):
            peer.send_message(message, wait=False)
        assert wait_until(lambda: len([m for m in received if m.type != "STATUS"]) >= 3, 30)
    finally:
        client.stop()
        peer.stop()
    by_name = {m.device_name: m for m in received}
    volume = by_name["Vol"].content
    np.testing.assert_array_equal(volume.array, voxels)
    # pyigtl marks its matrix LPS (O = 2): usnav converts it to RAS at the wire.
    np.testing.assert_allclose(volume.ijk_to_ras, np.diag([-1.0, -1, 1, 1]) @ ijk, atol=1e-6)
    np.testing.assert_allclose(by_name["AToB"].content.matrix, np.diag([1.0, -1, -1, 1]))
    assert by_name["AToB"].metadata == {"TransformStatus": "OK", "Note": "n1"}
    assert by_name["S"].content.text == "abc"


def test_every_client_gets_every_message_in_order(server):
    inboxes: list[list[Message]] = [[], [], []]
    clients = [
        IgtlClient("127.0.0.1", server.port, on_message=box.append).start() for box in inboxes
    ]
    try:
        assert server.wait_for_clients(3, timeout_s=30)
        for i in range(500):
            m = np.eye(4)
            m[0, 3] = i
            server.broadcast(Message("TRANSFORM", "T", TransformContent(m), 1.0 + i), wait_s=2)
        for box in inboxes:
            assert wait_until(lambda b=box: sum(m.type == "TRANSFORM" for m in b) >= 500, 10)
    finally:
        for c in clients:
            c.stop()
    for box in inboxes:
        xs = [m.content.matrix[0, 3] for m in box if m.type == "TRANSFORM"]
        assert xs == list(range(500))


def test_a_client_that_does_not_read_loses_frames_counted_and_is_cut_off():
    srv = IgtlServer(port=0, send_queue_messages=4, send_timeout_s=0.5).start()
    good: list[Message] = []
    stuck = socket.create_connection(("127.0.0.1", srv.port))
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client = IgtlClient("127.0.0.1", srv.port, on_message=good.append, header_version=1).start()
    try:
        assert srv.wait_for_clients(2, timeout_s=30)
        image = np.zeros((256, 256), dtype=np.uint8)
        # stream (sends never block) until the peer that does not read is cut off
        repeat_until(
            lambda: srv.send_image("Image_Reference", image, np.eye(4)),
            lambda: len(srv.clients) < 2,
            3.0,
            every_s=0.002,
        )
        # The stuck peer was disconnected for not reading; its losses were counted.
        assert wait_until(lambda: len(srv.clients) == 1, 30)
        assert wait_until(lambda: srv.stats().disconnects >= 1, 30)
        assert srv.stats().dropped_out > 0
        # The reading client kept receiving frames throughout.
        assert sum(m.type == "IMAGE" for m in good) > 0
    finally:
        client.stop()
        stuck.close()
        srv.stop()


def test_server_answers_in_v1_until_the_client_speaks_v2_and_answers_get_status(server):
    with socket.create_connection(("127.0.0.1", server.port)) as raw:
        version, mtype, _, _ = recv_message(raw)  # keep-alive STATUS
        assert (version, mtype) == (1, "STATUS")
        content = struct.pack(">Hq20s", 1, 0, b"") + b"\0"
        ext = struct.pack(">HHII", 12, 2, 0, 0)
        raw.sendall(raw_message(2, "STATUS", "", ext + content + struct.pack(">H", 0)))
        raw.sendall(raw_message(2, "GET_STATUS", "Q", ext + struct.pack(">H", 0)))
        replies = [recv_message(raw) for _ in range(3)]
        assert any(r[1] == "STATUS" and r[2] == "Q" and r[0] == 2 for r in replies)
        body = next(r[3] for r in replies if r[2] == "Q")
        assert struct.unpack(">H", body[12:14])[0] == 1  # code 1 = OK after the ext header


def test_client_notices_a_silent_peer_and_reconnects():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        listener.settimeout(5)
        client = IgtlClient(
            "127.0.0.1",
            listener.getsockname()[1],
            on_message=lambda m: None,
            receive_timeout_s=0.2,
        ).start()
        try:
            first, _ = listener.accept()  # accepts, never says anything
            second, _ = listener.accept()  # the client gave up on the first and came back
            assert wait_until(lambda: client.connections >= 2, 30)
            # It asked GET_STATUS before giving up on the silent peer.
            first.settimeout(2)
            seen = [recv_message(first)[1] for _ in range(2)]
            assert "GET_STATUS" in seen
            first.close()
            second.close()
        finally:
            client.stop()


def test_client_sees_a_closed_server_at_once_and_reconnects_when_it_returns():
    port = free_port()
    states: list[LinkState] = []
    srv = IgtlServer(port=port).start()
    client = IgtlClient("127.0.0.1", port, on_message=lambda m: None, on_state=states.append)
    client.start()
    try:
        assert client.wait_connected(5)
        srv.stop()
        assert wait_until(lambda: client.state is LinkState.CONNECTING, 30)
        srv = IgtlServer(port=port).start()
        assert client.wait_connected(5)
        assert states.count(LinkState.CONNECTED) == 2
    finally:
        client.stop()
        srv.stop()


def test_works_entirely_outside_the_main_thread():
    outcome: dict[str, object] = {}

    def worker() -> None:
        with IgtlServer(port=0) as srv:
            got: list[Message] = []
            client = IgtlClient("127.0.0.1", srv.port, on_message=got.append).start()
            srv.wait_for_clients(1, timeout_s=5)
            srv.send_transform("AToB", np.eye(4))
            outcome["ok"] = wait_until(lambda: any(m.type == "TRANSFORM" for m in got), 5)
            client.stop()

    t = threading.Thread(target=worker)
    t.start()
    t.join(20)
    assert outcome.get("ok") is True


def test_listening_beyond_loopback_needs_an_allow_list_and_it_is_enforced():
    with pytest.raises(ConfigError, match="allow-list"):
        IgtlServer("0.0.0.0", 0)
    with pytest.raises(ConfigError, match="not an IP address"):
        IgtlServer("127.0.0.1", 0, allow=["not-an-ip"])
    with IgtlServer(port=0, allow=["10.1.2.3"], allow_loopback=False) as srv:
        with socket.create_connection(("127.0.0.1", srv.port)) as refused:
            refused.settimeout(5)
            assert refused.recv(1) == b""  # closed at once
        assert srv.refused["not in allow-list"] == 1
        assert srv.clients == []


def test_query_for_unknown_data_gets_not_found_and_stt_gets_rts(server):
    got: list[Message] = []
    client = IgtlClient("127.0.0.1", server.port, on_message=got.append).start()
    try:
        assert client.wait_connected(5)
        client.send(Message("GET_IMAGE", "Nothing", RawContent()))
        client.send(Message("STT_TDATA", "", RawContent()))
        assert wait_until(lambda: any(m.type == "RTS_TDATA" for m in got), 30)
        not_found = [m for m in got if m.type == "STATUS" and m.device_name == "Nothing"]
        assert not_found and isinstance(not_found[0].content, StatusContent)
        assert not_found[0].content.code == 4
    finally:
        client.stop()
