"""signflow.review: the pull-request review: base against head."""
