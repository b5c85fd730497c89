"""Scale-out: the API enqueues on Redis through Celery; `marionet worker` processes run the tasks anywhere.

Task state stays in the one SQL database (PostgreSQL in a cluster); inputs and results live on storage that
all machines share (`MARIONET_STORAGE_DIR`). Nothing here is imported unless `MARIONET_QUEUE=celery`.
"""

from __future__ import annotations

from marionet.cluster.app import RUN_TASK, make_celery, queue_for_engine

__all__ = ["RUN_TASK", "make_celery", "queue_for_engine"]
