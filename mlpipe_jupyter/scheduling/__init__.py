"""Published pipelines, triggers and schedules (see docs/scheduling.md).

Pure parts (``cron``, ``policies``) compute fire times and decisions; ``publishing``,
``schedules`` and ``triggering`` read and write the workspace store; ``scheduler`` is the
long-running loop, with an injectable clock and run launcher.
"""
