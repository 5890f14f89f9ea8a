"""Optional py-spy sampling of the service process while a scenario runs (``--profile DIR``).

Only samples of threads holding the GIL are kept, so the profile shows where Python CPU goes.
Collapsed stacks (``--format raw``) are plain text: one stack and its sample count per line, easy
to grep or to feed to flamegraph.pl / speedscope.
"""

import asyncio
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path


@asynccontextmanager
async def profiled(pid: int, output: Path) -> AsyncIterator[None]:
    """Sample ``pid`` with py-spy while the block runs; collapsed stacks go to ``output``."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    output.parent.mkdir(parents=True, exist_ok=True)
    proc = await asyncio.create_subprocess_exec(
        spy,
        "record",
        "--pid",
        str(pid),
        "--format",
        "raw",
        "--rate",
        "200",
        "--nonblocking",
        # Only threads holding the GIL: Python CPU, not threads parked in the pool or on I/O.
        "--gil",
        "--output",
        str(output),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        # py-spy writes its output when interrupted.
        proc.send_signal(signal.SIGINT)
        await proc.wait()
