"""The ECS platform: task definition revisions pinned by digest, ECS's rolling update followed
by our own deployment id, rollback to the recorded task definition (`platform.py`)."""
