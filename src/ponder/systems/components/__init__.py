"""The built-in components and their configs.

==================  ===========================================================================
``generate``        n samples from one model (one request), or an ensemble of models
``critique``        strengths and weaknesses of every candidate (one call over all of them)
``rank``            listwise (one call) or pairwise ordering; keeps the top k
``fuse``            synthesises the candidates (and critiques) into new candidates
``judge``           LLM verifier: a 1-10 score or accept/reject per candidate; can filter
``unit_tests``      the model writes checks a good answer must pass
``unit_test_eval``  scores candidates against those checks, keeps the best
``refine``          self-refine: critique then revise, up to r rounds, until the critic accepts
``vote``            majority vote over extracted answers (no model)
``adaptive_vote``   samples in rounds until a stop rule says the vote is decided, then votes
``verify``          a task verifier as a filter, when the query has a reference (no model)
``beam_search``     step-level beam search guided by a process scorer (see :mod:`ponder.systems.tree`)
``dvts``            diverse verifier tree search: independent width-1 beam searches
``mcts``            Monte Carlo tree search over steps (UCT or PUCT; scorer values or rollouts)
``particles``       particle filtering over steps: resampling by normalised path scores
==================  ===========================================================================
"""

from ponder.systems.components._adaptive_vote import AdaptiveVote, AdaptiveVoteConfig
from ponder.systems.components._beam import BeamSearch, BeamSearchConfig, Dvts, DvtsConfig
from ponder.systems.components._critique import Critic, CritiqueConfig
from ponder.systems.components._fuse import Fuse, FuseConfig
from ponder.systems.components._generate import EnsembleMember, Generate, GenerateConfig
from ponder.systems.components._judge import Judge, JudgeConfig
from ponder.systems.components._mcts import Mcts, MctsConfig
from ponder.systems.components._particles import Particles, ParticlesConfig
from ponder.systems.components._rank import Rank, RankConfig
from ponder.systems.components._refine import Refine, RefineConfig
from ponder.systems.components._unit_tests import (
    UnitTestEval,
    UnitTestEvalConfig,
    UnitTests,
    UnitTestsConfig,
)
from ponder.systems.components._verify import Verify, VerifyConfig
from ponder.systems.components._vote import Vote, VoteConfig

__all__ = [
    "AdaptiveVote",
    "AdaptiveVoteConfig",
    "BeamSearch",
    "BeamSearchConfig",
    "Critic",
    "CritiqueConfig",
    "Dvts",
    "DvtsConfig",
    "EnsembleMember",
    "Fuse",
    "FuseConfig",
    "Generate",
    "GenerateConfig",
    "Judge",
    "JudgeConfig",
    "Mcts",
    "MctsConfig",
    "Particles",
    "ParticlesConfig",
    "Rank",
    "RankConfig",
    "Refine",
    "RefineConfig",
    "UnitTestEval",
    "UnitTestEvalConfig",
    "UnitTests",
    "UnitTestsConfig",
    "Verify",
    "VerifyConfig",
    "Vote",
    "VoteConfig",
]
