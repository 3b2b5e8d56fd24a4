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
from cluster.search.context import BudgetExhausted, SearchContext
from cluster.search.selection import best_first, conclude, score_of
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

    async def run(self, ctx: SearchContext) -> SearchOutcome:
        k = max(ctx.budget.max_branches // ctx.budget.beam_width, 1)
        while ctx.solved is None:
            path = await self._select(ctx)
            if path is None:
                break
            try:
                children = await ctx.expand(path[-1], k)
            except BudgetExhausted:
                break
            if not children:
                # Every step allowed here was proposed before; the node is now expanded.
                continue
            await score(ctx, children)
            evaluated = [child for child in children if not ctx.pruned(child)]
            for child in evaluated:
                # Each new step's own evaluation counts as its first visit.
                await ctx.backpropagate([ctx.node(child.node.node_id)], score_of(ctx, child))
            value = max((score_of(ctx, child) for child in evaluated), default=0.0)
            await ctx.backpropagate(path, value)
            ranked = best_first(ctx, [ctx.chain_of(ctx.node(c.node.node_id)) for c in children])
            await ctx.progress(path[-1].depth + 1, ranked[0] if ranked else None)
        return conclude(ctx, self.name)

    async def _select(self, ctx: SearchContext) -> list[ThoughtNode] | None:
        """The path from the root to the next step to expand; None when nothing is left."""
        assert ctx.root is not None
        while True:
            root = ctx.node(ctx.root.node_id)
            if not ctx.children_of(root):
                return [root]
            path = [root]
            node = root
            while node.status != "open":
                children = [c for c in ctx.children_of(node) if _live(c)]
                if not children:
                    break
                node = select_child(children, node.visits, ctx.budget.exploration)
                path.append(node)
            if node.status == "open":
                return path
            if node is root:
                return None
            # Every step below this node is finished or ruled out: never come back here.
            await ctx.set_status([ctx.chain_of(node)], "pruned")
