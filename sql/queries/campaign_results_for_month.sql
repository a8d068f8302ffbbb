SELECT level, risk_tier, cluster_id, segment, suggested_action, listed, contacted, held_out,
    held_out_contacted, churn_rate_contacted, churn_rate_held_out, difference, ci_lower, ci_upper,
    clients_kept, min_detectable_effect, difference_listed, ci_lower_listed, ci_upper_listed
FROM churn.campaign_results
WHERE month = %(month)s
ORDER BY level, risk_tier, cluster_id, suggested_action NULLS LAST
