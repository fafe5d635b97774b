"""`ledger serve`: uvicorn around the app, with the embedded database when no URL is set.

With `--workers N` (LEDGER_SERVE_WORKERS) the API answers from N processes on one listening
socket, which the first (the primary) binds and hands to the others: one CPython process
keeps one core busy at about half a millisecond of CPU per write request (the framework's
routing, dependencies, validation and responses most of it), which bounded the writes one
`ledger serve` answered. With `--projections-process` (LEDGER_SERVE_PROJECTIONS_PROCESS)
both projection groups run in a process of their own rather than on the loop that
answers HTTP, where a catch-up page of the reports' group held requests up. Each HTTP
process tells it of each append through a pipe (a byte, never waited for), as an append
wakes the runner in one process, so that a read with `min_position` waits for the page,
not for the runner's next poll (`LEDGER_PROJECTION_IDLE_MS`).

Exactly one process runs each projection group and each scheduler: the primary runs the
schedulers (and the projections unless they have their own process), starts the other
processes and restarts any that exits, as supervised tasks (`http-2`, ..., `projections`)
shown in its /readyz and /metrics. The other HTTP processes run only the rules refresh.
Writes from several processes are safe as writes from several `ledger consume` processes
are: an expected version per stream, retried on a conflict, and advisory locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import uvicorn

from ledger import event_loop
from ledger.api.access_log import log_to_stderr
from ledger.api.app import create_app
from ledger.bootstrap import Container, build
from ledger.keys import Role, create_key, list_keys
from ledger.settings import Settings
from ledger.store.database import UNAVAILABLE, StartupError
from ledger.supervisor import Backoff, ReportedTasks, sleep_or_stop

log = logging.getLogger(__name__)

EXIT_INTERRUPTED = 130  # what a shell reports for a process ended by SIGINT (128 + 2)
FORCED_REQUESTS_WAIT_S = 2.0  # after a second Ctrl-C, how long requests get to end once their connections are cut
GRACEFUL_SHUTDOWN_S = 10  # how long requests in flight get to finish once a process is asked to stop
CHILD_STOP_S = 15.0  # then a child process still running is killed (under the supervisor's own stop bound)
PRIMARY = "primary"
REPORT_ERROR_CHARS_MAX = 300  # of each task's last error in a report (a line stays well under PIPE_BUF)
CHILD_DATABASE_WAIT_S_MAX = 2.0  # a child starting while the database is away tries again at least this often


def _uvicorn_config(app: object, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(app, host=host, port=port, log_level="info", access_log=False,  # type: ignore[arg-type]
                          timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
                          # No proxy in front is assumed: the app reads no client address, and
                          # the proxy-headers layer was one more per request.
                          proxy_headers=False)


class ChildExited(RuntimeError):
    pass


def _poker(fd: int) -> Callable[[], None]:
    """What an HTTP process calls after each append: a byte down the wake pipe."""

    def poke() -> None:
        try:
            os.write(fd, b"\0")
        except (BlockingIOError, BrokenPipeError):
            pass  # a full pipe wakes the reader anyway; none: the primary is ending

    return poke


def _child_task(name: str, role: str, url: str, sock: socket.socket | None,
                wake_fd: int | None = None, reported: ReportedTasks | None = None) -> Callable[..., Awaitable[None]]:
    """A supervised task that runs one child process (`role`: "http" or "projections")
    until the primary stops, and fails (to be restarted with back-off) if the child exits
    before that. The child connects to the primary's database (`url`), runs no
    migrations, and ends when the primary ends, even killed (see `_die_with_parent`).
    `wake_fd`: the wake pipe's end the child writes (http) or reads (projections).
    `reported`: where the statuses of the child's own tasks go, which it reports through
    a pipe of its own (a JSON line a second), to show in the primary's /readyz."""

    async def task(container: Container, stop: asyncio.Event) -> None:
        argv = [sys.executable, "-m", "ledger.serve", role, "--name", name, "--parent", str(os.getpid())]
        fds: tuple[int, ...] = ()
        if sock is not None:
            argv += ["--fd", str(sock.fileno())]
            fds = (sock.fileno(),)
        if wake_fd is not None:
            argv += ["--wake-fd", str(wake_fd)]
            fds += (wake_fd,)
        status_r = status_w = None
        if reported is not None:
            status_r, status_w = os.pipe()
            argv += ["--status-fd", str(status_w)]
            fds += (status_w,)
        env = {**os.environ, "LEDGER_DATABASE_URL": url}
        # A session of its own: a Ctrl-C in the terminal reaches the primary alone, which
        # stops its children in order, rather than each of them at once (which the
        # supervisor would take for failures and restart).
        try:
            child = await asyncio.create_subprocess_exec(*argv, env=env, pass_fds=fds, stdin=subprocess.DEVNULL,
                                                         start_new_session=True)
        except BaseException:
            if status_r is not None:
                os.close(status_r)
            raise
        finally:
            if status_w is not None:
                os.close(status_w)  # the child's now: its end closes the pipe when it exits
        following = (asyncio.ensure_future(_follow_reports(status_r, name, reported))
                     if reported is not None and status_r is not None else None)
        exited = asyncio.ensure_future(child.wait())
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if following is not None:
                following.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await following
            if reported is not None:
                reported.clear(name)  # a child gone: its task shows down, not what it last said
            if child.returncode is None:
                child.terminate()
                try:
                    await asyncio.wait_for(asyncio.shield(exited), CHILD_STOP_S)
                except TimeoutError:
                    log.error("%s did not stop within %.0f s; killing it", name, CHILD_STOP_S)
                    child.kill()
                    await exited
        if not stop.is_set():
            raise ChildExited(f"the {role} process {name} exited with status {child.returncode}")

    task.__name__ = f"{name}_task"  # the supervised task's name (create_app drops the suffix)
    return task


async def _follow_reports(fd: int, name: str, reported: ReportedTasks) -> None:
    """The child's reports, a JSON line each, into `reported` until the pipe closes."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    pipe = os.fdopen(fd, "rb", 0)
    try:
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    except BaseException:
        pipe.close()
        raise
    try:
        while True:
            try:
                line = await reader.readline()
                if not line:
                    return  # the child exited
                reported.set(name, orjson.loads(line))
            except ValueError:  # a line cut short or past the reader's limit: the next one will do
                continue
    finally:
        transport.close()


def _reporter(fd: int) -> Callable[[dict[str, dict[str, Any]]], None]:
    """What the projection process reports its tasks' statuses with: one line, written
    whole (well under the pipe's atomic write size) or not at all when the pipe is full."""
    os.set_blocking(fd, False)

    def report(statuses: dict[str, dict[str, Any]]) -> None:
        line = orjson.dumps({task: {**s, "last_error": (s["last_error"] or "")[:REPORT_ERROR_CHARS_MAX] or None}
                             for task, s in statuses.items()}) + b"\n"
        with contextlib.suppress(BlockingIOError, BrokenPipeError):
            os.write(fd, line)

    return report


async def _serve(settings: Settings, host: str, port: int) -> bool:
    """Serve until a signal; returns whether a signal arrived before the server was up."""
    # Until uvicorn takes the signals over, a Ctrl-C is noted rather than raised: the
    # start-up (the embedded server, migrations) runs partly in threads that an
    # exception would abandon, leaving a server behind. It stops once it is up.
    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()

    def note(sig: signal.Signals) -> None:
        if not interrupted.is_set():
            log.info("%s during start-up: stopping as soon as the database is up", sig.name)
        interrupted.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, note, sig)
    try:
        container = await build(settings)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    try:
        if interrupted.is_set():
            await container.close(stop_embedded=True)
            return True
        if not await list_keys(container.pool):
            _, token = await create_key(container.pool, "admin", Role.admin)
            print(f"\nNo API keys existed, so an admin key was created. It is shown only this once:\n\n  {token}\n",
                  flush=True)
        tasks = []
        if settings.kafka_bootstrap_servers:
            from ledger.ingest.consumer import consumer_task

            tasks.append(consumer_task)
        several = settings.serve_workers > 1 or settings.serve_projections_process
        sock = None
        # The projection process's wake pipe: the primary keeps both ends open (a child
        # started again gets them again), so a write never fails for want of a reader.
        wake_r = wake_w = None
        reported = ReportedTasks() if settings.serve_projections_process else None
        if settings.serve_projections_process:
            wake_r, wake_w = os.pipe()
            os.set_blocking(wake_w, False)
            container.ledger.on_appended = _poker(wake_w)
            tasks.append(_child_task("projections", "projections", container.url, None, wake_r, reported))
        if settings.serve_workers > 1:
            sock = _uvicorn_config(None, host, port).bind_socket()  # one socket, shared by every HTTP process
            tasks += [_child_task(f"http-{n}", "http", container.url, sock, wake_w)
                      for n in range(2, settings.serve_workers + 1)]
        app = create_app(settings, container=container, extra_tasks=tasks, close_container=True,
                         projections=not settings.serve_projections_process, process=PRIMARY if several else None,
                         reported=reported)
        log_to_stderr()  # one JSON line per request, in place of uvicorn's access log
        # uvicorn installs the SIGINT/SIGTERM handlers: it stops accepting, drains,
        # then runs the lifespan's shutdown, which stops the background tasks, and
        # then raises the signal again (a KeyboardInterrupt for SIGINT, caught below).
        server = uvicorn.Server(_uvicorn_config(app, host, port))
        try:
            await server.serve(sockets=[sock] if sock is not None else None)
        finally:
            await _finish_lifespan(server)
            if sock is not None:
                sock.close()
            for fd in (wake_r, wake_w):
                if fd is not None:
                    os.close(fd)
    except BaseException:
        await container.close(stop_embedded=True)
        raise
    return False


async def _finish_lifespan(server: uvicorn.Server) -> None:
    """A second Ctrl-C during the drain makes uvicorn stop waiting for the requests in
    flight, as asked, and skip the lifespan's shutdown too: the background tasks then ran
    on while the pool and the embedded database were closed under them (the Kafka
    consumer timed out twice, 20 s, before the process ended) and the lifespan was
    cancelled at exit with a traceback. So the shutdown uvicorn skipped runs here."""
    lifespan = getattr(server, "lifespan", None)
    if not (server.force_exit and lifespan is not None and getattr(lifespan, "startup_event", None) is not None
            and lifespan.startup_event.is_set() and not lifespan.shutdown_event.is_set()
            and not lifespan.error_occurred):
        return
    # Cut the connections still open, so that a request waiting for its body ends (as a
    # client that went away) rather than being cancelled at exit, with a traceback.
    for connection in list(server.server_state.connections):
        connection.transport.close()
    if server.server_state.tasks:
        await asyncio.wait(list(server.server_state.tasks), timeout=FORCED_REQUESTS_WAIT_S)
    log.info("second interrupt: requests in flight were cut short; stopping the background tasks")
    await lifespan.shutdown()


def serve(settings: Settings, host: str | None = None, port: int | None = None, workers: int | None = None,
          projections_process: bool | None = None) -> int:
    update: dict[str, object] = {}
    if workers is not None:
        update["serve_workers"] = workers
    if projections_process is not None:
        update["serve_projections_process"] = projections_process
    settings = settings.model_copy(update=update)  # bounded by the command line's own choices
    try:
        interrupted = event_loop.run(_serve(settings, host or settings.host, port or settings.port))
    except KeyboardInterrupt:
        interrupted = True
    if interrupted:
        log.info("ledger serve stopped (interrupted)")
        return EXIT_INTERRUPTED
    return 0


# --- the child processes of `ledger serve --workers N` / `--projections-process` ---

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """Have the kernel send this process SIGTERM when the primary ends, even killed
    (Linux), so that no child is left serving a port or projecting on its own; then
    make sure the primary had not already ended before that was set."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is not None and sys.platform.startswith("linux"):
        ctypes.CDLL(libc_name, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        raise SystemExit(f"ledger serve child: the primary process {parent} has ended")


async def _build_child(settings: Settings, stop: asyncio.Event | None = None) -> Container | None:
    """A child's container, once the database answers: a child (re)started while the
    primary's watchdog brings the embedded server back (a kill, a restart) waits for it
    rather than exiting, which the primary would count as a failure. None: stopped."""
    backoff = Backoff(s_max=CHILD_DATABASE_WAIT_S_MAX)
    while True:
        try:
            return await build(settings, run_migrations=False)
        except (StartupError, *UNAVAILABLE) as exc:  # refused at connect, or cut once connected
            if isinstance(exc, StartupError) and not isinstance(exc.__cause__, UNAVAILABLE):
                raise
            delay = backoff.next()
            log.warning("the database is away (%s: %s); trying again in %.1f s", type(exc).__name__, exc, delay)
        if stop is None:
            await asyncio.sleep(delay)
        else:
            await sleep_or_stop(stop, delay)
            if stop.is_set():
                return None


async def _http_child(settings: Settings, name: str, fd: int, wake_fd: int | None) -> None:
    sock = socket.socket(fileno=fd)
    container = await _build_child(settings)
    assert container is not None
    if wake_fd is not None:
        container.ledger.on_appended = _poker(wake_fd)
    try:
        app = create_app(settings, container=container, close_container=True, projections=False, schedulers=False,
                         process=name)
        log_to_stderr()
        server = uvicorn.Server(_uvicorn_config(app, settings.host, settings.port))
        await server.serve(sockets=[sock])
    except BaseException:
        await container.close(stop_embedded=False)
        raise


async def _projections_child(settings: Settings, wake_fd: int | None, status_fd: int | None) -> None:
    from ledger.cli import _tasks
    from ledger.supervisor import supervise_until

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    container = await _build_child(settings, stop)
    if container is None:
        return
    if wake_fd is not None:
        # An append in an HTTP process wakes the member runner as one in this process would.
        appended = container.ledger.appended

        def woken() -> None:
            with contextlib.suppress(BlockingIOError):
                os.read(wake_fd, 65_536)
            appended.set()

        os.set_blocking(wake_fd, False)
        loop.add_reader(wake_fd, woken)
    try:
        await supervise_until(stop, _tasks(container, projections=container.runner.run_forever,
                                           **{"projections-reports": container.reports_runner.run_forever}),
                              report=_reporter(status_fd) if status_fd is not None else None)
    finally:
        await container.close(stop_embedded=False)


def _child_main(argv: list[str]) -> int:
    import argparse

    from ledger import logs

    parser = argparse.ArgumentParser(prog="ledger serve (child)")
    parser.add_argument("role", choices=("http", "projections"))
    parser.add_argument("--name", required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--fd", type=int, default=None)
    parser.add_argument("--wake-fd", type=int, default=None)
    parser.add_argument("--status-fd", type=int, default=None)
    args = parser.parse_args(argv)
    logs.configure()
    _die_with_parent(args.parent)
    settings = Settings()
    try:
        if args.role == "http":
            assert args.fd is not None, "an HTTP child serves the primary's socket"
            event_loop.run(_http_child(settings, args.name, args.fd, args.wake_fd))
        else:
            event_loop.run(_projections_child(settings, args.wake_fd, args.status_fd))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
