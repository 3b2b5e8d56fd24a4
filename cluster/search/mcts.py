"""Monte Carlo tree search over steps, with PUCT selection.

Selection walks from the root to an open step by mean value plus an exploration bonus
weighted by the model's own prior for each sibling (the softmax of the steps' mean token
log-probabilities). Expansion asks the branch-generators for the next steps; evaluation is
the verifiers' score of each new step; backpropagation adds the best new score to every
node of the path. Visits and value sums live on the nodes in Redis, so a resumed planner
continues with the statistics its predecessor gathered.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from cluster.search.base import SearchOutcome, SearchStrategy, register_strategy
from cluster.search.context import SearchContext
from cluster.search.expander import BudgetExhausted
from cluster.search.selection import best_first, conclude
from cluster.search.stepwise import score
from cluster.store import ThoughtNode

# Nodes that can still lead somewhere: open steps and expanded ones.
_LIVE = frozenset({"open", "expanded"})


def _live(node: ThoughtNode) -> bool:
    return node.status in _LIVE and (node.score is None or node.score > 0)


def puct(child: ThoughtNode, prior: float, parent_visits: int, exploration: float) -> float:
    value = child.mean_value if child.mean_value is not None else 0.0
    return value + exploration * prior * math.sqrt(parent_visits + 1) / (1 + child.visits)


def priors(children: Sequence[ThoughtNode]) -> list[float]:
    """The model's preference among sibling steps: softmax of their mean log-probabilities."""
    logprobs = [c.logprob if c.logprob is not None else 0.0 for c in children]
    top = max(logprobs, default=0.0)
    weights = [math.exp(lp - top) for lp in logprobs]
    total = sum(weights)
    return [w / total for w in weights]


def select_child(children: Sequence[ThoughtNode], parent_visits: int, exploration: float) -> ThoughtNode:
    weights = priors(children)
    return max(
        zip(children, weights, strict=True),
        key=lambda pair: puct(pair[0], pair[1], parent_visits, exploration),
    )[0]


@register_strategy
class MonteCarloTreeSearch(SearchStrategy):
    name = "mcts"
    grows_tree = True

    async def run(self, ctx: SearchContext) -> SearchOutcome:
        k = max(ctx.budget.max_branches // ctx.budget.beam_width, 1)
        tree, score_of = ctx.tree, ctx.scorer.score_of
        stopped: str | None = None
        while ctx.scorer.solved is None:
            path = self._select(ctx)
            if path is None:
                break
            try:
                children = await ctx.expander.expand(path[-1], k)
            except BudgetExhausted:
                stopped = "budget"
                break
            if not children:
                # Every step allowed here was proposed before; the node is now expanded.
                continue
            await score(ctx, children)
            evaluated = [child for child in children if not tree.pruned(child)]
            for child in evaluated:
                # Each new step's own evaluation counts as its first visit.
                tree.visit([child.node], score_of(child))
            tree.visit(path, max((score_of(child) for child in evaluated), default=0.0))
            ranked = best_first(ctx, [tree.chain(c.node) for c in children])
            await ctx.progress(path[-1].depth + 1, ranked[0] if ranked else None)
        return conclude(ctx, self.name, stopped)

    def _select(self, ctx: SearchContext) -> list[ThoughtNode] | None:
        """The path from the root to the next step to expand; None when nothing is left."""
        tree = ctx.tree
        while True:
            root = tree.root
            if not tree.children(root):
                return [root]
            path = [root]
            node = root
            while node.status != "open":
                children = [c for c in tree.children(node) if _live(c)]
                if not children:
                    break
                node = select_child(children, node.visits, ctx.budget.exploration)
                path.append(node)
            if node.status == "open":
                return path
            if node is root:
                return None
            # Every step below this node is finished or ruled out: never come back here.
            tree.set_status([node.node_id], "pruned")
