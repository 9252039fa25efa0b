"""hrp_data.verify.run: the size of the verify's next PostgreSQL statement, from the last one's rate."""

from __future__ import annotations

from hrp_data.verify.run import next_statement_buckets


class TestStatementSizing:
    def test_a_slow_statement_makes_the_next_one_smaller(self):
        assert next_statement_buckets(100, seconds=20.0, target_s=5.0) == 25

    def test_a_fast_statement_makes_the_next_one_bigger_at_most_four_times(self):
        assert next_statement_buckets(100, seconds=2.5, target_s=5.0) == 200
        assert next_statement_buckets(100, seconds=0.001, target_s=5.0) == 400
