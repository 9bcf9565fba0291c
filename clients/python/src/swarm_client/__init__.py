"""Python client for Swarm, the distributed execution cluster for agent swarms.

```python
from swarm_client import Client, InvalidSpec
client = Client("http://127.0.0.1:7070", token=None)
run = client.submit({"name": "research", "subtasks": [...]}, idempotency_key="job-42")
for event in run.events():
    ...
summary = run.wait(timeout=60)
```

Blocking here; the same API awaitable in :mod:`swarm_client.aio`. Errors are
:class:`SwarmError` subclasses carrying the server's details.
"""

from ._common import RunResult, Spec
from ._proto.swarm.v1 import swarm_pb2 as pb
from ._sync import Client, Run
from .errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidSpec,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    SwarmError,
    Unauthenticated,
    Unavailable,
)

__version__ = "0.1.0"

__all__ = [
    "Client",
    "Run",
    "RunResult",
    "Spec",
    "pb",
    "SwarmError",
    "InvalidSpec",
    "NotFound",
    "AlreadyExists",
    "FailedPrecondition",
    "PermissionDenied",
    "Unauthenticated",
    "ResourceExhausted",
    "Unavailable",
    "DeadlineExceeded",
    "__version__",
]
