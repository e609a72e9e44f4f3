//! What a new adaptive session runs with: the exam's policy, narrowed or raised by the
//! request, where the policy is a floor (never shorter or looser than the exam's).

use examflow_engine::cat::{
    CatConfig, ClassificationRule, FirstItem, SelectionRule, StartRule, StopRule,
};

use super::StartRequest;
use crate::config::AdaptivePolicy;
use crate::error::ApiError;

/// The engine configuration of a new session: the exam's policy, narrowed by the request.
pub(super) fn session_config(
    policy: &AdaptivePolicy,
    request: &StartRequest,
    bank_items: usize,
) -> Result<CatConfig, ApiError> {
    let bad = |m: String| ApiError::bad_request("invalid_session_options", m);
    let rule = request.rule.unwrap_or(policy.rule);
    if !policy.allowed_rules.contains(&rule) {
        return Err(bad(format!(
            "rule {} is not allowed for this exam; allowed: {}",
            rule_name(rule),
            policy
                .allowed_rules
                .iter()
                .map(|r| rule_name(*r))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    // The exam's policy is a floor the request can only raise: longer or more precise,
    // never shorter or looser (422 names the limit).
    let below = |m: String| ApiError::Refused {
        code: "below_exam_policy",
        message: m,
    };
    let max_length = request.max_length.unwrap_or(policy.max_length);
    if max_length == 0 || max_length > policy.max_length {
        return Err(bad(format!(
            "max_length {max_length} is outside this exam's limit of 1 to {}",
            policy.max_length
        )));
    }
    if max_length < policy.min_length {
        return Err(below(format!(
            "max_length {max_length} is below this exam's min_length {}: a test cannot be shorter than that",
            policy.min_length
        )));
    }
    let min_length = request.min_length.unwrap_or(policy.min_length);
    if min_length < policy.min_length {
        return Err(below(format!(
            "min_length {min_length} is below this exam's min_length {}",
            policy.min_length
        )));
    }
    if min_length > max_length {
        return Err(bad(format!(
            "min_length {min_length} is larger than max_length {max_length}"
        )));
    }
    // A bank shorter than the limit ends the test when it runs out.
    let max_length = max_length.min(bank_items.max(1));
    let min_length = min_length.min(max_length);
    let se = request.se.unwrap_or(policy.se_target);
    if !se.is_finite() {
        return Err(bad(format!("se {se} is not a number")));
    }
    if se > policy.se_target {
        return Err(below(format!(
            "se {se} is looser than this exam's se_target {}: a session may ask for more precision, not less",
            policy.se_target
        )));
    }
    if se < policy.min_se_target {
        return Err(bad(format!(
            "se {se} is below this exam's smallest SE target {}",
            policy.min_se_target
        )));
    }
    let classification = match (policy.cut_score, policy.stop_on_classification) {
        (Some(cut), true) => Some(ClassificationRule::ci(cut, 1.96)),
        _ => None,
    };
    let config = CatConfig {
        estimator: policy.estimator,
        rule,
        exposure: policy.exposure.clone(),
        content: policy.content.clone(),
        stop: StopRule {
            min_length,
            max_length,
            se: Some(se),
            classification,
        },
        start: StartRule {
            theta: 0.0,
            first_item: FirstItem::RandomMedium { k: 5 },
        },
        ..CatConfig::default()
    };
    config.validate().map_err(|e| bad(e.to_string()))?;
    Ok(config)
}

pub(super) fn rule_name(rule: SelectionRule) -> String {
    serde_json::to_value(rule)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_outside_the_policy_are_refused() {
        let policy = AdaptivePolicy::default();
        let ok = session_config(&policy, &StartRequest::default(), 50).unwrap();
        assert_eq!(ok.stop.max_length, policy.max_length);
        assert_eq!(ok.stop.se, Some(policy.se_target));
        let too_long = StartRequest {
            max_length: Some(policy.max_length + 1),
            ..Default::default()
        };
        assert!(
            session_config(&policy, &too_long, 50)
                .unwrap_err()
                .to_string()
                .contains("limit")
        );
        let too_precise = StartRequest {
            se: Some(0.05),
            ..Default::default()
        };
        assert!(session_config(&policy, &too_precise, 50).is_err());
        let mut narrow = policy.clone();
        narrow.allowed_rules = vec![SelectionRule::Mfi];
        let kl = StartRequest {
            rule: Some(SelectionRule::Kl),
            ..Default::default()
        };
        let e = session_config(&narrow, &kl, 50).unwrap_err().to_string();
        assert!(e.contains("kl") && e.contains("mfi"), "{e}");
        // A short bank caps the length.
        assert_eq!(
            session_config(&policy, &StartRequest::default(), 7)
                .unwrap()
                .stop
                .max_length,
            7
        );
    }
}
