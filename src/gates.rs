//! Gates: proxied paths that need a signed-in user or a subscription
//! (`[[gates]]`), and the decision for one request.
//!
//! A gate's `path` is compiled once into a [`Pattern`] of loose segments
//! (lower-cased, as [`routes::loose_segments`] reads a request path), so a
//! spelling an app framework would route to a gated page (`/App/Pro`,
//! `/app;x/pro`, `/app%2Fpro`) meets the gate too. `*` is exactly one
//! segment, a final `**` any number (none included). The first gate whose
//! pattern matches applies. Hand-written: glob crates match file names,
//! not normalized URL segments, and the whole matcher is a dozen lines.

use crate::account::{Account, Subscription};
use crate::routes::{self, Route, Segment};

/// What a gate asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Require {
    User,
    Subscription,
}

impl Require {
    pub const ALL: [Require; 2] = [Require::User, Require::Subscription];

    /// The name in `config.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Require::User => "user",
            Require::Subscription => "subscription",
        }
    }

    pub fn parse(name: &str) -> Option<Require> {
        Require::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

/// A compiled gate path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    /// Loose segments; `*` matches any one.
    segments: Vec<String>,
    /// Ends with `**`: any further segments, none included.
    rest: bool,
}

impl Pattern {
    /// Compiles a configured path such as `/app/*/billing/**`; refuses a
    /// pattern no request path can match.
    pub fn new(path: &str) -> Result<Pattern, String> {
        if !path.starts_with('/') {
            return Err(format!("must start with '/': {path:?}"));
        }
        if path.contains(['?', '#', ';', '\\']) || path.parse::<http::uri::PathAndQuery>().is_err()
        {
            return Err(format!(
                "can never match: {path:?} (request paths are compared without query, ';parameters' or '\\\\')"
            ));
        }
        let mut segments = routes::loose_segments(path);
        let rest = segments.last().is_some_and(|last| last == "**");
        if rest {
            segments.pop();
        }
        if let Some(bad) = segments
            .iter()
            .find(|s| s.contains('*') && s.as_str() != "*")
        {
            return Err(format!(
                "can never match: {path:?} ('*' and a final '**' must be whole segments, not {bad:?})"
            ));
        }
        Ok(Pattern { segments, rest })
    }

    /// Whether the loose segments of a request path match.
    pub fn matches(&self, loose: &[String]) -> bool {
        let fits = if self.rest {
            loose.len() >= self.segments.len()
        } else {
            loose.len() == self.segments.len()
        };
        fits && self
            .segments
            .iter()
            .zip(loose)
            .all(|(pattern, segment)| pattern == "*" || pattern == segment)
    }

    /// Whether this pattern is exactly a local route's path, with no
    /// wildcard: such a gate never applies (local routes are not proxied).
    pub fn is_only(&self, route: &Route) -> bool {
        !self.rest
            && self.segments.len() == route.pattern.len()
            && self
                .segments
                .iter()
                .zip(&route.pattern)
                .all(|(s, p)| match p {
                    Segment::Literal(literal) => *s == literal.to_lowercase(),
                    Segment::Param(_) => false,
                })
    }
}

/// One configured gate.
#[derive(Debug, Clone)]
pub struct Gate {
    /// As configured, for logs.
    pub path: String,
    pub pattern: Pattern,
    pub require: Require,
    /// Price ids (aliases resolved); empty = any subscribed plan.
    pub plans: Vec<String>,
    /// Stripe Entitlements lookup keys, all needed.
    pub features: Vec<String>,
    /// Where browsers are sent instead of a JSON error.
    pub redirect: Option<String>,
}

/// The first gate matching `path`, if any.
pub fn find<'a>(gates: &'a [Gate], path: &str) -> Option<&'a Gate> {
    if gates.is_empty() {
        return None;
    }
    let loose = routes::loose_segments(path);
    gates.iter().find(|gate| gate.pattern.matches(&loose))
}

/// What a gate decided: `result` of `stripe_sidecar_gate_decisions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    NoSession,
    InvalidSession,
    NotSubscribed,
    WrongPlan,
    MissingFeature,
    /// No state to decide on: the lookup or the sync failed.
    Unavailable,
}

impl Decision {
    pub const ALL: [Decision; 7] = [
        Decision::Allowed,
        Decision::NoSession,
        Decision::InvalidSession,
        Decision::NotSubscribed,
        Decision::WrongPlan,
        Decision::MissingFeature,
        Decision::Unavailable,
    ];
}

impl Gate {
    /// The decision for a caller whose session is verified (a gate asking
    /// only for a user is then passed) and whose account is `account`
    /// (`None`: it could not be had).
    pub fn decide(&self, account: Option<&Account>, subscribed: &[String]) -> Decision {
        if self.require == Require::User {
            return Decision::Allowed;
        }
        let Some(account) = account else {
            return Decision::Unavailable;
        };
        let mut subscriptions = account
            .state
            .subscriptions
            .iter()
            .filter(|s| s.is_in(subscribed));
        let Some(first) = subscriptions.next() else {
            return Decision::NotSubscribed;
        };
        // A subscription's plan is its first price (aliases were resolved
        // to price ids when the config was read).
        let on_plan = |s: &&Subscription| {
            self.plans.is_empty()
                || s.price_ids
                    .first()
                    .is_some_and(|id| self.plans.contains(id))
        };
        if !std::iter::once(first)
            .chain(subscriptions)
            .any(|s| on_plan(&s))
        {
            return Decision::WrongPlan;
        }
        let features = &account.state.features;
        if !self.features.iter().all(|f| features.contains(f)) {
            return Decision::MissingFeature;
        }
        Decision::Allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, path: &str) -> bool {
        Pattern::new(pattern)
            .unwrap()
            .matches(&routes::loose_segments(path))
    }

    /// Gate patterns against the request paths an app framework would
    /// route to the gated page: the table of docs/reference.md's gates section.
    #[test]
    fn patterns_match_every_spelling_of_a_gated_path() {
        let table: &[(&str, &str, bool)] = &[
            ("/app/pro/**", "/app/pro", true),
            ("/app/pro/**", "/app/pro/", true),
            ("/app/pro/**", "/app/pro/reports/2026", true),
            ("/app/pro/**", "/APP/Pro/x", true),
            ("/app/pro/**", "/app;jsessionid=1/pro", true),
            ("/app/pro/**", "/app%2Fpro/x", true),
            ("/app/pro/**", "/app%2fpro", true),
            ("/app/pro/**", "/app%5Cpro", true),
            ("/app/pro/**", "/app\\pro", true),
            ("/app/pro/**", "/app//pro", true),
            ("/app/pro/**", "/app/./pro", true),
            ("/app/pro/**", "/app/x/../pro", true),
            ("/app/pro/**", "/%61pp/pro", true),
            ("/app/pro/**", "/app/prox", false),
            ("/app/pro/**", "/app", false),
            ("/app/pro/**", "/other/app/pro", false),
            ("/app/*/settings", "/app/team1/settings", true),
            ("/app/*/settings", "/app/settings", false),
            ("/app/*/settings", "/app/a/b/settings", false),
            ("/app/*/settings", "/app/team1/settings/x", false),
            ("/Reports", "/reports", true),
            ("/reports", "/reports/2026", false),
            ("/**", "/", true),
            ("/**", "/anything/at/all", true),
        ];
        for (pattern, path, expected) in table {
            assert_eq!(matches(pattern, path), *expected, "{pattern} vs {path}");
        }
    }

    #[test]
    fn patterns_that_can_never_match_are_refused() {
        for bad in [
            "app/pro",
            "",
            "/app/pro?x=1",
            "/app;x/pro",
            "/app/pro*",
            "/app/**/pro",
            "/a\\b",
            "/app/p*o",
        ] {
            assert!(Pattern::new(bad).is_err(), "{bad}");
        }
    }
}
