"""signflow.evaluation.evaluate: closed-set and open-set metrics, the evaluate stage, the report and its figures."""
