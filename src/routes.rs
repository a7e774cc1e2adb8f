//! The route table: which requests the sidecar answers itself.
//!
//! A request path is normalized once (unreserved characters percent-decoded,
//! other escapes upper-cased, a lone `%` written as `%25`, empty segments dropped, dot segments resolved,
//! as RFC 3986 section 6.2.2 describes) and matched against the configured
//! routes, so `/api/%73tripe//x/../create-checkout` can never slip past a
//! local route to the app. Everything that does not match is proxied with
//! its original bytes; this module never rewrites a path. Hand-written
//! because the normalization must be exactly this one: URL libraries either
//! keep empty segments or decode reserved characters.

use http::Method;

/// What a local route does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Checkout,
    Portal,
    Webhook,
    Subscription,
}

impl Action {
    pub const ALL: [Action; 4] = [
        Action::Checkout,
        Action::Portal,
        Action::Webhook,
        Action::Subscription,
    ];

    /// The name in `config.toml`, the logs and the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Checkout => "checkout",
            Action::Portal => "portal",
            Action::Webhook => "webhook",
            Action::Subscription => "subscription",
        }
    }

    /// The one method a route doing this answers (others get 405 with
    /// this as `Allow`).
    pub fn method(self) -> &'static str {
        match self {
            Action::Subscription => "GET",
            _ => "POST",
        }
    }

    pub fn parse(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == name)
    }
}

/// Checkout mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Payment,
    Subscription,
}

impl Mode {
    pub const ALL: [Mode; 2] = [Mode::Payment, Mode::Subscription];

    /// The name in `config.toml` and in request bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Payment => "payment",
            Mode::Subscription => "subscription",
        }
    }

    pub fn parse(name: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.as_str() == name)
    }
}

/// `"a", "b" or "c"`, for messages that list the accepted names.
pub fn one_of(names: impl IntoIterator<Item = &'static str>) -> String {
    let quoted: Vec<String> = names.into_iter().map(|n| format!("{n:?}")).collect();
    match quoted.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    /// `{name}`: any one segment, its value kept under `name`.
    Param(String),
}

/// One configured local route.
#[derive(Debug, Clone)]
pub struct Route {
    /// As configured, for logs and `--check`.
    pub path: String,
    pub pattern: Vec<Segment>,
    pub action: Action,
    pub status: http::StatusCode,
    pub default_mode: Option<Mode>,
    pub forward_to: Option<String>,
}

impl Route {
    /// Compiles a configured path such as `/teams/{teamId}/checkout`.
    pub fn new(path: &str, action: Action) -> Result<Route, String> {
        if !path.starts_with('/') {
            return Err(format!("must start with '/': {path:?}"));
        }
        if path.contains(['?', '#']) || path.parse::<http::uri::PathAndQuery>().is_err() {
            return Err(format!("not a valid path: {path:?}"));
        }
        let mut pattern = Vec::new();
        for segment in normalize(path) {
            if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                let valid =
                    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    return Err(format!("not a valid {{name}} segment: {segment:?}"));
                }
                if pattern.contains(&Segment::Param(name.to_string())) {
                    return Err(format!("{{{name}}} appears twice"));
                }
                pattern.push(Segment::Param(name.to_string()));
            } else if segment.contains(['{', '}']) {
                return Err(format!("a {{name}} must be a whole segment: {segment:?}"));
            } else {
                pattern.push(Segment::Literal(segment));
            }
        }
        Ok(Route {
            path: path.to_string(),
            pattern,
            action,
            status: http::StatusCode::OK,
            default_mode: None,
            forward_to: None,
        })
    }

    /// Whether `loose` (see [`loose_segments`]) could be this route as an
    /// app framework reads paths: literals compared lower-cased.
    fn matches_loosely(&self, loose: &[String]) -> bool {
        loose.len() == self.pattern.len()
            && self.pattern.iter().zip(loose).all(|(p, s)| match p {
                Segment::Literal(literal) => literal.to_lowercase() == *s,
                Segment::Param(_) => true,
            })
    }

    /// The path parameters when `segments` match this route.
    fn params(&self, segments: &[String]) -> Option<Vec<(String, String)>> {
        if segments.len() != self.pattern.len() {
            return None;
        }
        let mut params = Vec::new();
        for (pattern, segment) in self.pattern.iter().zip(segments) {
            match pattern {
                Segment::Literal(literal) if literal == segment => {}
                Segment::Literal(_) => return None,
                Segment::Param(name) => params.push((name.clone(), decode_all(segment))),
            }
        }
        Some(params)
    }
}

/// The result of looking a request up.
#[derive(Debug)]
pub enum Match<'a> {
    Local {
        route: &'a Route,
        params: Vec<(String, String)>,
    },
    /// A local route path with another method: 405 with `Allow` the
    /// route's method.
    WrongMethod {
        route: &'a Route,
    },
    /// Never proxied, answered 404: a spelling an app framework might
    /// route to a local route or a webhook's `forward_to` path (case,
    /// `;parameters`, encoded slashes), or a `forward_to` path itself,
    /// which only verified events may reach.
    NotFound,
    Proxy,
}

/// The compiled routes, matched in configuration order.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<Route>,
    /// The webhooks' `forward_to` paths, in their loose form.
    forwards: Vec<Vec<String>>,
}

impl RouteTable {
    pub fn new(routes: Vec<Route>) -> RouteTable {
        let forwards = routes
            .iter()
            .filter_map(|route| route.forward_to.as_deref())
            .map(loose_segments)
            .collect();
        RouteTable { routes, forwards }
    }

    pub fn find(&self, method: &Method, path: &str) -> Match<'_> {
        let segments = normalize(path);
        for route in &self.routes {
            if let Some(params) = route.params(&segments) {
                if method.as_str() == route.action.method() {
                    return Match::Local { route, params };
                }
                return Match::WrongMethod { route };
            }
        }
        let loose = loose_segments(path);
        let near_a_route = self.routes.iter().any(|r| r.matches_loosely(&loose));
        if near_a_route || self.forwards.contains(&loose) {
            return Match::NotFound;
        }
        Match::Proxy
    }
}

/// The loose form of a path, as lenient app frameworks read it: `\`,
/// `%2F` and `%5C` as `/`, `;parameters` removed from each segment,
/// normalized as [`normalize`] does, then lower-cased. Used to keep
/// near-spellings of local paths from reaching the app, and by gates.
pub fn loose_segments(path: &str) -> Vec<String> {
    let slashed = path
        .replace('\\', "/")
        .replace("%2F", "/")
        .replace("%2f", "/")
        .replace("%5C", "/")
        .replace("%5c", "/");
    let without_params: Vec<&str> = slashed
        .split('/')
        .map(|segment| segment.split(';').next().unwrap_or_default())
        .collect();
    normalize(&without_params.join("/"))
        .into_iter()
        .map(|segment| segment.to_lowercase())
        .collect()
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Normalizes a request path into its segments (see the module doc).
pub fn normalize(path: &str) -> Vec<String> {
    let mut segments: Vec<String> = Vec::new();
    for raw in path.split('/') {
        let segment = normalize_escapes(raw);
        match segment.as_str() {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            _ => segments.push(segment),
        }
    }
    segments
}

/// Decodes escaped unreserved characters and upper-cases the other escapes.
fn normalize_escapes(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = String::with_capacity(segment.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                let decoded = hi << 4 | lo;
                if is_unreserved(decoded) {
                    out.push(decoded as char);
                } else {
                    out.push('%');
                    out.push(bytes[i + 1].to_ascii_uppercase() as char);
                    out.push(bytes[i + 2].to_ascii_uppercase() as char);
                }
                i += 3;
                continue;
            }
        }
        if bytes[i] == b'%' {
            // A `%` that starts no escape is written as one, so what an
            // escape decoded next to it yields can never complete it
            // (`%%373` is not `%73`): normalizing twice changes nothing.
            out.push_str("%25");
            i += 1;
            continue;
        }
        // Request paths are ASCII (hyper rejects others), so byte = char;
        // config paths may not be, so copy the whole char.
        let Some(ch) = segment.get(i..).and_then(|rest| rest.chars().next()) else {
            break;
        };
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// Fully percent-decodes a path parameter value for use as metadata.
fn decode_all(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        let mut routes = vec![
            Route::new("/api/stripe/create-checkout", Action::Checkout).unwrap(),
            Route::new("/api/stripe/create-portal", Action::Portal).unwrap(),
            Route::new(
                "/api/billstack/teams/{teamId}/projects/{projectId}/checkout",
                Action::Checkout,
            )
            .unwrap(),
        ];
        routes[2].status = http::StatusCode::CREATED;
        RouteTable::new(routes)
    }

    /// What a POST to `path` does: the action, `404` or `proxy`.
    fn outcome(table: &RouteTable, path: &str) -> &'static str {
        match table.find(&Method::POST, path) {
            Match::Local { route, .. } => route.action.as_str(),
            Match::WrongMethod { .. } => "405",
            Match::NotFound => "404",
            Match::Proxy => "proxy",
        }
    }

    #[test]
    fn tricky_spellings_of_a_local_route_are_local() {
        let table = table();
        let cases = [
            ("/api/stripe/create-checkout", "checkout"),
            ("/api/stripe/create-checkout/", "checkout"),
            ("/api/stripe//create-checkout", "checkout"),
            ("//api///stripe/create-checkout", "checkout"),
            ("/api/%73tripe/create-checkout", "checkout"),
            ("/%61%70%69/stripe/create%2Dcheckout", "checkout"),
            ("/api/x/../stripe/create-checkout", "checkout"),
            ("/api/./stripe/./create-checkout", "checkout"),
            ("/api/x/%2E%2E/stripe/create-checkout", "checkout"),
            ("/api/x/%2e%2e/stripe/create-checkout", "checkout"),
            ("/../../api/stripe/create-checkout", "checkout"),
            ("/api/stripe/create-checkout/x/..", "checkout"),
            ("/api/stripe/create-portal", "portal"),
            // Regression: spellings an app framework routes to the same
            // handler (Express: case-insensitive, `;x` ignored, `%2F` as
            // `/`) were proxied to the app.
            ("/API/stripe/create-checkout", "404"),
            ("/api/%73TRIPE/create-checkout", "404"),
            ("/api/stripe%2Fcreate-checkout", "404"),
            ("/api/stripe%2fcreate-checkout", "404"),
            ("/api/stripe%5Ccreate-checkout", "404"),
            ("/api\\stripe\\create-checkout", "404"),
            ("/api/stripe/create-checkout;x", "404"),
            ("/api;a=b/stripe/Create-Checkout", "404"),
            ("/api/billstack/teams/T1/projects/p;x/CHECKOUT", "404"),
            // Not the route in any spelling: proxied untouched.
            ("/api/stripe/create-checkout%00", "proxy"),
            ("/api/stripe/create-checkout.json", "proxy"),
            ("/api/stripe/create-checkoutx", "proxy"),
            ("/api/stripe", "proxy"),
            ("/", "proxy"),
            ("*", "proxy"),
            ("/api/stripe/create-checkout/extra", "proxy"),
            ("/api/stripe/create-checkout%", "proxy"),
            ("/api/stripe/create-checkout%2", "proxy"),
        ];
        for (path, want) in cases {
            assert_eq!(outcome(&table, path), want, "{path}");
        }
    }

    /// Regression: a `forward_to` path that is not itself a local route was
    /// proxied to the app's webhook handler for anyone.
    #[test]
    fn forward_to_paths_are_reached_only_by_verified_events() {
        let mut hook = Route::new("/hooks/stripe-in", Action::Webhook).unwrap();
        hook.forward_to = Some("/internal/stripe".into());
        let table = RouteTable::new(vec![hook]);
        assert_eq!(outcome(&table, "/hooks/stripe-in"), "webhook");
        for path in [
            "/internal/stripe",
            "/internal//stripe/",
            "/Internal/Stripe",
            "/internal%2Fstripe",
            "/internal/stripe;v=1",
        ] {
            assert_eq!(outcome(&table, path), "404", "{path}");
        }
        assert_eq!(outcome(&table, "/internal/stripe-other"), "proxy");
    }

    #[test]
    fn other_methods_get_405_with_allow() {
        for method in [Method::GET, Method::PUT, Method::OPTIONS, Method::HEAD] {
            assert!(matches!(
                table().find(&method, "/api/stripe//create-portal"),
                Match::WrongMethod { .. }
            ));
        }
        assert!(matches!(table().find(&Method::GET, "/other"), Match::Proxy));
    }

    #[test]
    fn path_parameters_are_captured_decoded() {
        let table = table();
        let Match::Local { route, params } = table.find(
            &Method::POST,
            "/api/billstack/teams/t%20one/projects/p_2/checkout",
        ) else {
            panic!("no match")
        };
        assert_eq!(route.status, http::StatusCode::CREATED);
        assert_eq!(
            params,
            [
                ("teamId".to_string(), "t one".to_string()),
                ("projectId".to_string(), "p_2".to_string())
            ]
        );
    }

    #[test]
    fn bad_route_paths_are_rejected() {
        for bad in [
            "no-slash",
            "/a/{}",
            "/a/{x}/{x}",
            "/a/b{x}",
            "/a?b",
            "/a/{x-y}",
        ] {
            assert!(Route::new(bad, Action::Checkout).is_err(), "{bad}");
        }
    }
}
