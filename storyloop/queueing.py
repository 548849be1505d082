"""Who answers what next: the policy shared by the judging queue (annotator/work_queue.py) and the study queue
(studies/queue.py), free of the database. The queues read counts from their own tables and ask this.

An annotator gets gold items first, then at the gold rate; otherwise the open item closest to done (most
answers, then the queue's own order) that they have not answered. An item is open while its answers plus other
annotators' live leases are below k. A skip counts towards k only under SkipPolicy.counts; under
everyone_last the skipper may get the item again when nothing else is left.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from storyloop.db.models import SkipPolicy

LEASE_TTL = timedelta(minutes=20)


def aware(dt: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything here is UTC."""
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


@dataclass
class OpenItems:
    """One annotator's view of a queue of items."""

    user_id: int
    item_ids: list[int]  # the items that can be served, in the queue's order
    gold_ids: set[int]
    done: Counter  # item -> answers that count towards k
    leased_by_others: Counter  # item -> live leases of other annotators
    skipped_by_me: dict[int, bool]  # item -> whether this annotator's latest answer is a skip (absent: none yet)
    k: int
    gold_rate: float
    skip_policy: SkipPolicy

    @property
    def gold_in_queue(self) -> bool:
        """Gold items go to every annotator at the gold rate; with rate 0 they are ordinary items."""
        return self.gold_rate > 0 and bool(self.gold_ids)

    def is_regular(self, item: int) -> bool:
        return not (self.gold_in_queue and item in self.gold_ids)

    def open_for_me(self, item: int) -> bool:
        skipped = self.skipped_by_me.get(item)
        if skipped is not None and not (skipped and self.skip_policy == SkipPolicy.everyone_last):
            return False
        if not self.is_regular(item):
            return True
        return self.done[item] + self.leased_by_others[item] < self.k

    def gold_due(self) -> bool:
        answered_gold = sum(1 for item in self.skipped_by_me if item in self.gold_ids)
        return self.gold_in_queue and answered_gold < self.gold_rate * (len(self.skipped_by_me) + 1)

    def candidates(self) -> list[int]:
        """Items this annotator may get, best first."""
        open_ids = [i for i in self.item_ids if self.open_for_me(i)]
        gold = [i for i in open_ids if not self.is_regular(i)]
        position = {i: n for n, i in enumerate(self.item_ids)}
        regular = sorted((i for i in open_ids if self.is_regular(i)),
                         key=lambda i: (i in self.skipped_by_me, -self.done[i], position[i]))
        # Gold first while due; leftover gold after the regular work, so everyone meets each gold item.
        return gold + regular if self.gold_due() else regular + gold
