"""One decorator for every Celery task of the shell: :func:`continuity_task`.

Every task in ``workers/`` is declared the same way, so the properties the layer depends on hold for all of
them and are read in one place:

* **Delivery.** ``acks_late`` (default on: a killed worker's task is redelivered; effects are keyed, so a
  redelivery is a no-op) always comes with ``reject_on_worker_lost``; a task that must not be redelivered
  (a sweep replaced by the next one, a drill whose rollbacks the next run finishes) says ``acks_late=False``.
* **Time limits** on every task: ``time_limit`` is required, the soft limit defaults to 5 s before it.
* **Injection.** A task asks for what it needs with keyword-only parameters: ``client`` (this process's Redis
  client, cached per URL and connection options) and ``bp`` (the fleet blueprint, re-read when the file
  changes). They are not part of the task's signature on the wire: Celery checks and beat, the CLI and other
  tasks send only the remaining arguments.
* **Failure → pulse.** An exception the task does not expect (anything but a
  :class:`~continuity.errors.ContinuityError`, which tasks report themselves, and Celery's own control flow:
  retry, ignore, reject) writes a ``task.crashed`` pulse event, then is re-raised unchanged, so the task
  fails exactly as it would have. At most one event per (task, exception type) a minute in each process.
* **Signed control plane.** A control-plane task (:data:`continuity.task_auth.POLICY`) first checks the
  signature envelope its message carries (added by the publish hook in :mod:`workers.app`); a missing, forged,
  expired or wrong-role one fails the task with :class:`~continuity.task_auth.Unauthenticated` before anything
  runs (no client, no blueprint, no effect) and writes a ``task.rejected`` pulse event. So does a copy of a
  signed message that already ran (a replay: :mod:`continuity.state.replay` remembers each signature until
  its envelope expires).
* ``bind``: the task's first parameter is the Celery task itself (``self.request``, ``update_state``,
  ``retry``), as with ``app.task(bind=True)``.
* **A failure is a failure.** A task whose work ran to the end but failed (a copy whose target was locked, a
  restore drill that found damage, a drill that missed its objectives) returns a result saying so; its
  ``failed_when`` turns that result into a :class:`TaskFailed` raised after the task recorded everything, so
  Celery stores FAILURE and Flower shows the task red with the reason, never a green SUCCESS.
* **Progress Flower shows.** :func:`progress_reporter` sends a ``task-progress`` event (Flower sets the task's
  state to PROGRESS and shows the text in its Result column) besides the PROGRESS state in the result backend.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from celery.exceptions import Ignore, Reject, Retry

from continuity import paths, pulse, settings, task_auth
from continuity.blueprint import Blueprint, load_blueprint
from continuity.config_watch import ConfigError, LastGood
from continuity.errors import ContinuityError
from continuity.events import CONFIG_INVALID, CONFIG_RECOVERED, TASK_CRASHED, TASK_REJECTED
from continuity.redisd import connect
from continuity.state import config_errors, replay
from workers.app import app

log = logging.getLogger("continuity.tasks")

INJECTED = ("client", "bp")
# raised on purpose: reported by the task itself (ContinuityError) or Celery's control flow
EXPECTED: tuple[type[BaseException], ...] = (ContinuityError, Retry, Ignore, Reject)
REPORT_EVERY = 60.0
SOFT_MARGIN = 5

_clients: dict[tuple[Any, ...], Any] = {}
_blueprints: dict[str, LastGood[Blueprint]] = {}
_reported: dict[tuple[str, str], float] = {}


class TaskFailed(ContinuityError):
    """The task's own verdict: its work ended in failure (recorded and reported by the task itself)."""


def progress_reporter(task: Any) -> Callable[[str, Mapping[str, Any]], None]:
    """``report(text, meta)`` for ``task``, callable from any thread (engine worker threads have no request).

    Celery's custom states live only in the result backend, and Flower draws tasks from events: so progress
    is both ``update_state(PROGRESS, meta)`` and a ``task-progress`` event carrying the text as ``result``.
    Never raises: progress is a courtesy, the work is what matters."""
    task_id, hostname = task.request.id, task.request.hostname

    def report(text: str, meta: Mapping[str, Any]) -> None:
        try:
            task.update_state(task_id=task_id, state="PROGRESS", meta=dict(meta))
            with task.app.events.default_dispatcher(hostname=hostname) as events:
                events.send("task-progress", uuid=task_id, result=text, progress=dict(meta))
        except Exception as exc:  # noqa: BLE001
            log.debug("progress of %s not reported: %s", task_id, exc)

    return report


def redis_client(**options: Any) -> Any:
    """This process's client for the configured Redis with ``options`` (created on first use, then reused)."""
    key = (settings.REDIS_URL.get(), tuple(sorted(options.items())))
    client = _clients.get(key)
    if client is None:
        client = _clients[key] = connect(**options)
    return client


def blueprint() -> Blueprint:
    """The fleet blueprint, re-read when the file changes; while an edit leaves it broken, the last good one.

    A typo saved under a running fleet must not switch failure detection off: the error is reported once
    (``config.invalid`` pulse event, and ``config:errors`` in Redis for ``continuity status``) and cleared
    when the file loads again (:mod:`continuity.config_watch`).
    """
    path = paths.blueprint_path()
    watch = _blueprints.get(str(path))
    if watch is None:
        watch = _blueprints[str(path)] = LastGood(load_blueprint, keep_copy=paths.last_good("blueprint.yml"))
    loaded = watch.get(path)
    if loaded.news is not None:
        tell_config_news(loaded.news, str(path), loaded.error)
    return loaded.value


def tell_config_news(news: str, path: str, error: ConfigError | None) -> None:
    """Say that a config file broke or healed: one pulse event and the status entry; never raises (every watched
    ops/ file of a long-running process reports its news here: the blueprint, the notifications)."""
    node = settings.NODE.get() or "control"
    try:
        if news == "invalid" and error is not None:
            log.error("%s no longer loads; keeping the last good content: %s", path, error.error)
            pulse.emit(CONFIG_INVALID, node=settings.NODE.get(),
                       data={"file": path, "error": error.error, "since": error.since})
            config_errors.report(redis_client(), node, path, error.error, error.since)
        else:
            log.warning("%s loads again", path)
            pulse.emit(CONFIG_RECOVERED, node=settings.NODE.get(), data={"file": path})
            config_errors.clear(redis_client(), node, path)
    except Exception as exc:  # noqa: BLE001 - reporting must not take the task down with it
        log.warning("could not report the state of %s: %s", path, exc)


def report_crash(name: str, task: Any, exc: BaseException, now: Callable[[], float] = time.monotonic) -> bool:
    """Write a ``task.crashed`` event (throttled); never raises: the task's own exception is what matters."""
    key = (name, type(exc).__name__)
    at = now()
    last = _reported.get(key)
    if last is not None and at - last < REPORT_EVERY:
        return False
    _reported[key] = at
    request = getattr(task, "request", None)
    try:
        pulse.emit(TASK_CRASHED, node=settings.NODE.get(),
                   data={"task": name, "task_id": getattr(request, "id", None), "error": str(exc)[:500],
                         "type": type(exc).__name__, "retries": int(getattr(request, "retries", 0) or 0)})
    except Exception:  # noqa: BLE001 - bookkeeping must not replace the task's exception
        log.exception("could not write the task.crashed event of %s", name)
        return False
    return True


def authenticate(name: str, task: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str | None:
    """Refuse a control-plane message that is not signed by a role allowed to send it (see task_auth), or that
    already ran (a replay, :mod:`continuity.state.replay`); the signature to mark done once the task ends."""
    request = task.request
    if name not in task_auth.POLICY or request.is_eager:  # eager: an in-process call, no message crossed Redis
        return None
    raw = getattr(request, task_auth.HEADER, None)
    try:
        now = time.time()
        env, _role = task_auth.check(_trust(), name, request.id, args, kwargs, raw, now)
        if replay.claim(redis_client(), env.sig, env.expires_at - now + task_auth.SKEW) == replay.DONE:
            raise task_auth.Unauthenticated(f"replayed: this signed message (key {env.signer}) already ran")
    except task_auth.Unauthenticated as exc:
        report_rejection(name, request.id, str(exc), raw.get("signer") if isinstance(raw, Mapping) else None)
        raise
    return env.sig


def report_rejection(name: str, task_id: str | None, reason: str, signer: str | None) -> None:
    """Log and write the ``task.rejected`` pulse event of a refused message; never raises (the refusal stands
    even when it cannot be recorded)."""
    log.error("task %s %s rejected: %s", name, task_id, reason)
    try:
        pulse.emit(TASK_REJECTED, node=settings.NODE.get(),
                   data={"task": name, "task_id": task_id, "reason": reason, "signer": signer})
    except Exception:  # noqa: BLE001
        log.exception("could not write the task.rejected event of %s", name)


def _ran(signature: str | None) -> None:
    """Mark a signed message done (a copy of it is a replay from now on); never raises."""
    if signature is None:
        return
    try:
        replay.finish(redis_client(), signature)
    except Exception as exc:  # noqa: BLE001 - the task's own outcome is what matters
        log.warning("could not mark a signed message done: %s", exc)


def _trust() -> task_auth.Trust:
    """Trusted keys: the role files under the state dir."""
    return task_auth.load_trust()


def continuity_task(name: str, *, time_limit: int, soft_time_limit: int | None = None, acks_late: bool = True,
                    bind: bool = False, redis: Mapping[str, Any] | None = None,
                    failed_when: Callable[[Any], str | None] | None = None,
                    **options: Any) -> Callable[[Callable[..., Any]], Any]:
    """Register ``fun`` as the Celery task ``name`` (see the module docstring for what every task gets).

    ``redis``: connection options of the injected client (e.g. shorter timeouts for the sweep).
    ``failed_when``: maps the task's result to why it failed (None: it did not); see :class:`TaskFailed`.
    ``options``: passed to ``app.task`` (``ignore_result``, ``max_retries``, ...).
    """
    client_options = dict(redis or {})

    def register(fun: Callable[..., Any]) -> Any:
        sig = inspect.signature(fun)
        params = list(sig.parameters.values())
        wants = [p.name for p in params if p.name in INJECTED and p.kind is inspect.Parameter.KEYWORD_ONLY]
        wire = [p for p in params if p.name not in wants]
        if bind and not wire:
            raise TypeError(f"task {name}: bind=True needs the task as first parameter")
        self_param = [] if bind else [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]

        @functools.wraps(fun)
        def run(self: Any, *args: Any, **kwargs: Any) -> Any:
            signature = authenticate(name, self, args, kwargs)
            try:
                if "client" in wants:
                    kwargs["client"] = redis_client(**client_options)
                if "bp" in wants:
                    kwargs["bp"] = blueprint()
                result = fun(self, *args, **kwargs) if bind else fun(*args, **kwargs)
            except EXPECTED:
                raise
            except Exception as exc:
                report_crash(name, self, exc)
                raise
            finally:
                _ran(signature)  # ran to an end (a retry is a new message, re-signed): a copy now is a replay
            why = failed_when(result) if failed_when is not None else None
            if why:
                raise TaskFailed(why)
            return result

        # what Celery checks calls against: the wire arguments only (plus the bound task)
        run.__signature__ = sig.replace(parameters=self_param + wire)  # type: ignore[attr-defined]
        return app.task(name=name, bind=True, acks_late=acks_late, reject_on_worker_lost=acks_late,
                        time_limit=time_limit,
                        soft_time_limit=time_limit - SOFT_MARGIN if soft_time_limit is None else soft_time_limit,
                        **options)(run)

    return register
