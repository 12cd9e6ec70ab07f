"""Put arms side by side: paired significance, costs, break-even, learning curves, a recommendation.

Everything here works on what the harness returns (``EvalResult``-like objects with ``arm``,
``references``, ``predictions``, ``metrics``...), so a comparison of prompt versions and fine-tuned runs is
one code path. The modules:

    stats        paired tests (exact McNemar, paired bootstrap), intervals, how p-values and scores read
    costs        cost per query from computed tokens x a per-token time, noise, one-off cost, break-even volume
    curve        nested training subsets and the learning curve's crossover
    recommend    the decision rule and its plain-words reasons
    comparison   ``Comparison`` and ``build_comparison`` (no model needed), disagreements
    run          the standard comparison as a job; comparisons of runs already in the store
    versions     prompt versions: kept results, history, two versions side by side
"""

from .comparison import (CAUTION, UNCHANGED, ArmInfo, Comparison, build_comparison, disagreements, group_gaps,
                         inference_memory, latency, latency_label, metric_reason, unchanged_input_metrics,
                         unchanged_input_sentence)
from .costs import (COST_NOISE, ArmCost, CostModel, arm_cost, arm_costs, base_model, break_even_queries, cost_curve,
                    cost_noise, per_token_times, same_cost)
from .curve import crossover, crossover_summary, learning_curve_sizes, nested_subsets
from .recommend import (RULE_STEPS, ArmSummary, Priorities, Recommendation, dominated, recommend, score_phrase,
                        separated, tied_with_best)
from .run import (RESULT_FILE, comparable_runs, comparison_from_runs, dataset_label_counts, keep_arm_beside_adapter,
                  load_eval_result, run_comparison, save_eval_result, start_comparison)
from .stats import (ALPHA, METRIC_NAMES, PairwiseTest, compare_pair, deciding_metric, holm, luck_words,
                    macro_f1_interval, mcnemar_exact, metric_name, metric_value, p_text, paired_bootstrap,
                    paired_bootstrap_chrf, paired_bootstrap_macro_f1, primary_metric, resampled, rows_to_settle,
                    score_text, wilson_interval)
from .versions import compare_versions, keep_prompt_version, keep_variance, prompt_history

__all__ = [name for name in dir() if not name.startswith("_")]
