"""Progress of long work: rich's live bar on a terminal; in logs and CI, where rich's bar shows nothing, a plain
line per task every `log_every` seconds and one when the task completes."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

LOG_EVERY_S = 30.0


class LoggedProgress(Progress):
    def __init__(self, console: Console, log_every: float = LOG_EVERY_S):
        super().__init__(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                         TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                         # no live display off a terminal: plain lines instead (it left blank lines where TERM is unset)
                         console=console, transient=True, disable=not console.is_terminal)
        self.log_every = log_every
        self._logged: dict[TaskID, float | None] = {}  # last line's time; None once the completion line is out

    def add_task(self, description: str, *args, **kwargs) -> TaskID:
        task_id = super().add_task(description, *args, **kwargs)
        self._logged[task_id] = time.monotonic()
        return task_id

    def update(self, task_id: TaskID, **kwargs) -> None:
        super().update(task_id, **kwargs)
        self._log(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._log(task_id)

    def _log(self, task_id: TaskID) -> None:
        last = self._logged.get(task_id)
        if not self.disable or last is None:
            return
        task = next(t for t in self.tasks if t.id == task_id)
        done = task.total is not None and task.completed >= task.total
        now = time.monotonic()
        if not done and now - last < self.log_every:
            return
        self._logged[task_id] = None if done else now
        share = f" ({100 * task.completed / task.total:.0f} %)" if task.total else ""
        eta = f", ETA {task.time_remaining:.0f} s" if task.time_remaining is not None and not done else ""
        info = task.fields.get("info", "")
        of = f"/{task.total:g}" if task.total is not None else ""  # a live stream has no end to count to
        self.console.print(f"{task.description}: {task.completed:g}{of}{share}, "
                           f"{task.elapsed or 0:.0f} s{eta}" + (f", {info}" if info else ""))
