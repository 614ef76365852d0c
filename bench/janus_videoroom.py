"""Janus (Debian `janus`) as a benchmark server: a private configuration, the process, its CPU
time, and a small client of its HTTP API for the VideoRoom plugin.

Janus runs from a fresh directory with only the VideoRoom plugin and the HTTP transport (bound
to 127.0.0.1), no event handlers, no loggers and no STUN/TURN server, so it contacts nobody.
It gathers ICE candidates on 127.0.0.1 only (`ice_enforce_list`), which it would skip as a
loopback interface without the LD_PRELOAD shim `janus_ifaddrs.c` (built here with `cc`); see
shared/notes/webrtc-on-this-machine.md. The room's bitrate cap is raised far above the load.

Janus is started in its own session (a Ctrl-C in the terminal reaches the process that owns
it, which stops it in order) and with a parent-death signal, so it cannot outlive that process.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import aiohttp

HOST = "127.0.0.1"
ROOM = 1234
ROOM_BITRATE = 10_000_000
JANUS_LIB = Path("/usr/lib/x86_64-linux-gnu/janus")
SHIM_SOURCE = Path(__file__).resolve().with_name("janus_ifaddrs.c")
_PR_SET_PDEATHSIG = 1

JANUS_JCFG = """\
general: {{
	configs_folder = "{conf}"
	plugins_folder = "{plugins}"
	transports_folder = "{transports}"
	events_folder = "{empty}"
	loggers_folder = "{empty}"
	debug_level = 3
	interface = "{host}"
	server_name = "telemed-bench"
	session_timeout = 0
}}
certificates: {{
}}
media: {{
	ipv6 = false
}}
nat: {{
	nice_debug = false
	ice_enforce_list = "{host}"
	ignore_mdns = true
}}
plugins: {{
}}
transports: {{
}}
loggers: {{
}}
events: {{
	broadcast = false
}}
"""

HTTP_JCFG = """\
general: {{
	json = "compact"
	base_path = "/janus"
	http = true
	port = {port}
	ip = "{host}"
	https = false
	acl = "127."
}}
admin: {{
	admin_http = false
	admin_https = false
}}
"""

VIDEOROOM_JCFG = """\
general: {{
}}
room-{room}: {{
	description = "telemed bench"
	publishers = 1
	bitrate = {bitrate}
	fir_freq = 0
	videocodec = "vp8"
	record = false
}}
"""


class JanusError(RuntimeError):
    pass


def installed() -> bool:
    return shutil.which("janus") is not None and (JANUS_LIB / "plugins/libjanus_videoroom.so").exists()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child between fork and exec: SIGKILL when the parent (thread) exits."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (all threads) from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class JanusProcess:
    """One Janus, configured in `workdir` (which must exist and be empty; the caller removes it)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = 0
        self.process: asyncio.subprocess.Process | None = None
        self.log = workdir / "janus.log"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/janus"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def _configure(self) -> Path:
        conf, plugins, transports, empty = (self.workdir / d for d in ("conf", "plugins", "transports", "empty"))
        for folder in (conf, plugins, transports, empty):
            folder.mkdir()
        (plugins / "libjanus_videoroom.so").symlink_to(JANUS_LIB / "plugins/libjanus_videoroom.so")
        (transports / "libjanus_http.so").symlink_to(JANUS_LIB / "transports/libjanus_http.so")
        self.port = _free_port()
        (conf / "janus.jcfg").write_text(JANUS_JCFG.format(
            conf=conf, plugins=plugins, transports=transports, empty=empty, host=HOST))
        (conf / "janus.transport.http.jcfg").write_text(HTTP_JCFG.format(port=self.port, host=HOST))
        (conf / "janus.plugin.videoroom.jcfg").write_text(VIDEOROOM_JCFG.format(room=ROOM, bitrate=ROOM_BITRATE))
        return conf

    def _build_shim(self) -> Path:
        shim = self.workdir / "janus_ifaddrs.so"
        subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(shim), str(SHIM_SOURCE), "-ldl"],
                       check=True, capture_output=True)
        return shim

    async def start(self, timeout: float = 30.0) -> None:
        if not installed():
            raise JanusError("janus is not installed (apt-get install -y janus)")
        shim = self._build_shim()
        conf = self._configure()
        env = dict(os.environ, LD_PRELOAD=str(shim))
        with open(self.log, "wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                "janus", "-C", str(conf / "janus.jcfg"), "-F", str(conf), "-o",
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                cwd=self.workdir, start_new_session=True, preexec_fn=_die_with_parent)
        deadline = asyncio.get_running_loop().time() + timeout
        async with aiohttp.ClientSession() as http:
            while True:
                if self.process.returncode is not None:
                    raise JanusError(f"janus exited with {self.process.returncode}:\n{self.tail()}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{self.url}/info") as response:
                        info = await response.json(content_type=None)
                        if "janus.plugin.videoroom" in info.get("plugins", {}):
                            return
                        raise JanusError(f"janus started without the VideoRoom plugin:\n{self.tail()}")
                if asyncio.get_running_loop().time() > deadline:
                    raise JanusError(f"janus did not answer in {timeout:.0f} s:\n{self.tail()}")
                await asyncio.sleep(0.1)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def stop(self) -> None:
        """SIGTERM (Janus shuts down in order), SIGKILL if it has not exited in 10 s."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


class VideoRoomClient:
    """One Janus session over HTTP; a long poll delivers the asynchronous plugin events, which
    are matched to requests by transaction."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http: aiohttp.ClientSession | None = None
        self.session: int | None = None
        self._transactions = (f"t{i}" for i in itertools.count())
        self._pending: dict[str, asyncio.Future[dict]] = {}
        self._flags: dict[tuple[str, int], asyncio.Event] = {}
        self._poller: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        self.session = (await self._post(self.url, {"janus": "create"}))["data"]["id"]
        self._poller = asyncio.create_task(self._poll())

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        for future in self._pending.values():
            future.cancel()
        if self.http is not None:
            if self.session is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._post(f"{self.url}/{self.session}", {"janus": "destroy"}), 5)
            await self.http.close()

    async def attach(self) -> int:
        reply = await self._post(f"{self.url}/{self.session}",
                                 {"janus": "attach", "plugin": "janus.plugin.videoroom"})
        return reply["data"]["id"]

    async def message(self, handle: int, body: dict, jsep: dict | None = None,
                      timeout: float = 30.0) -> tuple[dict, dict | None]:
        """Send a plugin request; returns the plugin's event data and its JSEP, if any."""
        transaction = next(self._transactions)
        request: dict[str, Any] = {"janus": "message", "transaction": transaction, "body": body}
        if jsep is not None:
            request["jsep"] = jsep
        future = self._pending[transaction] = asyncio.get_running_loop().create_future()
        try:
            reply = await self._send(f"{self.url}/{self.session}/{handle}", request)
            if reply.get("janus") == "success":  # a synchronous plugin reply
                event = reply
            else:
                event = await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(transaction, None)
        data = event.get("plugindata", {}).get("data", {})
        if "error" in data or "error_code" in data:
            raise JanusError(f"{body.get('request')}: {data.get('error_code')} {data.get('error')}")
        return data, event.get("jsep")

    async def wait_for(self, kind: str, handle: int, timeout: float = 30.0) -> None:
        """Until Janus has sent an event of `kind` (e.g. "webrtcup") about `handle`."""
        try:
            await asyncio.wait_for(self._flag(kind, handle).wait(), timeout)
        except asyncio.TimeoutError:
            raise JanusError(f"no {kind} from handle {handle} in {timeout:.0f} s") from None

    def _flag(self, kind: str, handle: int) -> asyncio.Event:
        return self._flags.setdefault((kind, handle), asyncio.Event())

    async def _post(self, url: str, request: dict) -> dict:
        request = dict(request, transaction=next(self._transactions))
        reply = await self._send(url, request)
        if reply.get("janus") != "success":
            raise JanusError(f"{request['janus']}: {reply}")
        return reply

    async def _send(self, url: str, request: dict) -> dict:
        assert self.http is not None
        async with self.http.post(url, json=request) as response:
            response.raise_for_status()
            reply = await response.json(content_type=None)
        if reply.get("janus") == "error":
            raise JanusError(f"{request.get('janus')}: {reply.get('error')}")
        return reply

    async def _poll(self) -> None:
        assert self.http is not None
        url = f"{self.url}/{self.session}?maxev=16"
        while True:
            try:
                async with self.http.get(url) as response:
                    events = await response.json(content_type=None)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # a failed poll fails every waiting request
                for future in self._pending.values():
                    if not future.done():
                        future.set_exception(JanusError(f"long poll failed: {error!r}"))
                await asyncio.sleep(0.2)
                continue
            for event in events if isinstance(events, list) else [events]:
                if "sender" in event:
                    self._flag(event.get("janus", ""), event["sender"]).set()
                future = self._pending.get(event.get("transaction", ""))
                if future is not None and not future.done() and event.get("janus") == "event":
                    future.set_result(event)


class VideoRoom:
    """The benchmark's three requests (publish, subscribe, answer) as VideoRoom requests."""

    def __init__(self, client: VideoRoomClient) -> None:
        self.client = client
        self.feed: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.handles: dict[str, int] = {}

    async def publish(self, offer: dict) -> dict:
        handle = self.handles["publisher"] = await self.client.attach()
        data, jsep = await self.client.message(
            handle, {"request": "joinandconfigure", "room": ROOM, "ptype": "publisher",
                     "display": "publisher"},
            dict(offer, trickle=False))
        if jsep is None:
            raise JanusError(f"joinandconfigure returned no answer: {data}")
        self.feed.set_result(data["id"])
        return jsep

    async def subscribe(self, name: str) -> dict:
        # Janus knows a feed only once its PeerConnection is up
        feed = await self.feed
        await self.client.wait_for("webrtcup", self.handles["publisher"])
        handle = self.handles[name] = await self.client.attach()
        data, jsep = await self.client.message(
            handle, {"request": "join", "room": ROOM, "ptype": "subscriber",
                     "streams": [{"feed": feed}]})
        if jsep is None:
            raise JanusError(f"join returned no offer: {data}")
        return jsep

    async def answer(self, name: str, answer: dict) -> None:
        await self.client.message(self.handles[name], {"request": "start"}, dict(answer, trickle=False))
