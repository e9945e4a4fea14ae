"""The transaction engine: plans, the step registry, the journal, rollback, recovery, the
lock and pcimgr's state files. It knows no feature."""
