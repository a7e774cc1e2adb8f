//! `POST` portal: a Stripe Billing Portal session for the caller's
//! customer, returning to an allowed `returnUrl`; the reply is `{"url"}`.

use serde_json::{json, Map, Value};
use stripe_billing::billing_portal_session::CreateBillingPortalSession;

use super::{present, redirect_url, Billing};
use crate::error::Error;
use crate::identity::Subject;
use crate::stripe::Stripe;

/// Creates the portal session for `subject`; a user without a customer
/// gets the contract's 400, and none is created.
pub(super) async fn create(
    billing: &Billing,
    stripe: &Stripe,
    subject: &Subject,
    body: &Map<String, Value>,
) -> Result<Value, Error> {
    if !present(body, "returnUrl") {
        return Err(Error::BadRequest("Return URL is required".into()));
    }
    let return_url = redirect_url(
        body,
        "returnUrl",
        &billing.checkout.allowed_redirect_origins,
    )?;
    let customer = match subject {
        Subject::Customer { id, .. } => Some(id.clone()),
        Subject::User(user) => billing.customers.find(stripe, &user.id).await?,
        Subject::Anonymous => None,
    };
    let customer = customer.ok_or_else(|| {
        Error::BadRequest("You don't have a billing account yet. Make a purchase first.".into())
    })?;
    let session = CreateBillingPortalSession::new()
        .customer(customer)
        .return_url(return_url)
        .send(stripe)
        .await?;
    Ok(json!({ "url": session.url }))
}
