"""Platforms: where a service runs and who runs its rollout.

`engine` (no `platform:` in zerodown.yml): zerodown drives the rollout step by step over a
Runtime and a Router. `ecs`: ECS runs the rolling update and zerodown follows its own deployment,
records ECS's progress as zerodown events and rolls back to the recorded task definition.
"""
