//! A customer's subscription state as the product sees it: the kept
//! subscriptions and features, the one the status and plan come from, and
//! the `GET /api/stripe/subscription` reply. Plain data: the sync lives in
//! [`crate::subscriptions`], the gate's decision in [`crate::gates`].

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The statuses a kept subscription may have, in the order the best one is
/// chosen (`canceled` and `incomplete_expired` are not kept).
pub const SUBSCRIPTION_STATUSES: [&str; 6] = [
    "active",
    "trialing",
    "past_due",
    "unpaid",
    "incomplete",
    "paused",
];

/// One kept subscription, as the subscription route shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    pub id: String,
    pub status: String,
    pub price_ids: Vec<String>,
    /// The `checkout.prices` alias of the first price.
    pub plan: Option<String>,
    pub current_period_end: Option<i64>,
    pub cancel_at_period_end: bool,
    pub trial_end: Option<i64>,
    pub created: i64,
}

impl Subscription {
    /// Whether its status is one of `statuses` (the subscribed ones).
    pub fn is_in(&self, statuses: &[String]) -> bool {
        statuses.contains(&self.status)
    }

    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "status": self.status,
            "priceIds": self.price_ids,
            "plan": self.plan,
            "currentPeriodEnd": self.current_period_end,
            "cancelAtPeriodEnd": self.cancel_at_period_end,
            "trialEnd": self.trial_end,
        })
    }
}

/// A customer's subscriptions and active features.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub subscriptions: Vec<Subscription>,
    pub features: Vec<String>,
}

impl State {
    /// The subscription the customer's status and plan come from: by
    /// status (active, trialing, past_due, unpaid, incomplete, paused),
    /// then the most recently created.
    pub fn best(&self) -> Option<&Subscription> {
        let rank = |s: &Subscription| {
            SUBSCRIPTION_STATUSES
                .iter()
                .position(|status| *status == s.status)
                .unwrap_or(usize::MAX)
        };
        self.subscriptions
            .iter()
            .min_by(|a, b| rank(a).cmp(&rank(b)).then(b.created.cmp(&a.created)))
    }
}

/// Whose state it is: the customer (`None`: the user has none yet) and
/// the state (empty without a customer).
#[derive(Debug, Clone)]
pub struct Account {
    pub customer: Option<String>,
    pub state: Arc<State>,
}

impl Account {
    /// The `GET /api/stripe/subscription` reply.
    pub fn to_json(&self, subscribed_statuses: &[String]) -> Value {
        let best = self.state.best();
        let subscribed = self
            .state
            .subscriptions
            .iter()
            .any(|s| s.is_in(subscribed_statuses));
        json!({
            "customerId": self.customer,
            "subscribed": subscribed,
            "status": self.status(),
            "plan": best.and_then(|s| s.plan.clone()),
            "priceId": best.and_then(|s| s.price_ids.first().cloned()),
            "currentPeriodEnd": best.and_then(|s| s.current_period_end),
            "cancelAtPeriodEnd": best.map(|s| s.cancel_at_period_end),
            "trialEnd": best.and_then(|s| s.trial_end),
            "features": self.state.features,
            "subscriptions": self.state.subscriptions.iter().map(Subscription::to_json).collect::<Vec<_>>(),
        })
    }

    /// The best subscription's status, or `none`.
    pub fn status(&self) -> &str {
        self.state.best().map_or("none", |s| s.status.as_str())
    }

    /// The best subscription's plan alias.
    pub fn plan(&self) -> Option<&str> {
        self.state.best().and_then(|s| s.plan.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(id: &str, status: &str, created: i64) -> Subscription {
        Subscription {
            id: id.into(),
            status: status.into(),
            price_ids: vec![format!("price_{id}")],
            plan: None,
            current_period_end: None,
            cancel_at_period_end: false,
            trial_end: None,
            created,
        }
    }

    /// The documented order: status first, then the most recently created.
    #[test]
    fn the_best_subscription_is_chosen_by_status_then_age() {
        let state = |subs: Vec<Subscription>| State {
            subscriptions: subs,
            features: vec![],
        };
        let cases = [
            (vec![sub("a", "past_due", 9), sub("b", "active", 1)], "b"),
            (vec![sub("a", "trialing", 9), sub("b", "active", 1)], "b"),
            (vec![sub("a", "active", 1), sub("b", "active", 5)], "b"),
            (vec![sub("a", "paused", 9), sub("b", "incomplete", 1)], "b"),
            (vec![sub("a", "unpaid", 1), sub("b", "incomplete", 9)], "a"),
        ];
        for (subs, best) in cases {
            assert_eq!(state(subs.clone()).best().unwrap().id, best, "{subs:?}");
        }
        assert!(State::default().best().is_none());
    }

    #[test]
    fn no_subscription_reads_as_none_with_nulls() {
        let account = Account {
            customer: Some("cus_1".into()),
            state: Arc::default(),
        };
        let statuses = ["active".to_string()];
        assert_eq!(
            account.to_json(&statuses),
            json!({"customerId": "cus_1", "subscribed": false, "status": "none",
                   "plan": null, "priceId": null, "currentPeriodEnd": null,
                   "cancelAtPeriodEnd": null, "trialEnd": null,
                   "features": [], "subscriptions": []})
        );
    }
}
