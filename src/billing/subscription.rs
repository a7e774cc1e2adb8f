//! `GET` subscription: the caller's subscription state, as docs/reference.md's
//! JSON. A session caller gets their own; an API key with the
//! `subscription` action names `userId` or `customerId` in the query.
//! `?refresh=true` re-reads Stripe (at most once per
//! [`crate::subscriptions::REFRESH_WINDOW`]), for the user back on the
//! success page before the webhook. Never creates a customer.

use http::Uri;
use serde_json::Value;

use super::Billing;
use crate::error::Error;
use crate::identity::{Caller, Named, Rejection, Subject};
use crate::stripe::Stripe;

pub async fn answer(
    billing: &Billing,
    stripe: &Stripe,
    caller: &Caller,
    uri: &Uri,
) -> Result<Value, Error> {
    let mut named = Named::default();
    let mut refresh = false;
    for (key, value) in url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()) {
        let field = match key.as_ref() {
            "userId" => &mut named.user_id,
            "customerId" => &mut named.customer_id,
            "refresh" => {
                refresh = value == "true";
                continue;
            }
            _ => continue,
        };
        if value.is_empty() {
            return Err(Error::BadRequest(format!("{key} must not be empty")));
        }
        *field = Some(value.into_owned());
    }
    let customer = match caller.subject(named)? {
        Subject::User(user) => billing.customers.find(stripe, &user.id).await?,
        Subject::Customer { id, .. } => Some(id),
        Subject::Anonymous if matches!(caller, Caller::ApiKey(_)) => {
            return Err(Error::BadRequest(
                "customerId or userId is required with an API key".into(),
            ))
        }
        Subject::Anonymous => return Err(Rejection::NotSignedIn.into()),
    };
    let account = billing.account_of(stripe, customer, refresh).await?;
    Ok(account.to_json(billing.subscriptions.subscribed_statuses()))
}
