//! How an object's tenant is found: what Stripe names on the object itself, an admin's link,
//! then the links learned through other objects (README, "The fold").

use super::*;

impl CustomerState {
    /// The customer's own tenant: the one its own `metadata.tenant_id` names (no admin link
    /// overrides what Stripe says on the object itself), else its admin link, else the
    /// earliest claim learned from Stripe.
    pub(super) fn own_tenant(&self) -> Option<TenantClaim> {
        own_claim(&self.tenant, CUSTOMER_OWN_RULES)
            .or_else(|| self.admin_tenant.as_ref().map(|c| c.value.clone()))
            .or_else(|| self.tenant.as_ref().map(|c| c.value.clone()))
    }
}

/// The rules by which Stripe names a tenant on the object itself (DESIGN: "resolved from the
/// event itself where Stripe carries it"); such a claim outranks an admin link, which only
/// corrects what Stripe left unnamed and outranks every link learned through other objects.
pub(super) const CUSTOMER_OWN_RULES: &[ResolvedBy] = &[ResolvedBy::CustomerMetadata];
pub(super) const SUBSCRIPTION_OWN_RULES: &[ResolvedBy] = &[
    ResolvedBy::SubscriptionMetadata,
    ResolvedBy::InvoiceSubscriptionDetails,
];
pub(super) const SESSION_OWN_RULES: &[ResolvedBy] = &[
    ResolvedBy::CheckoutClientReferenceId,
    ResolvedBy::CheckoutMetadata,
];

/// `claim` when it is by one of `rules` (the object's own).
pub(super) fn own_claim(
    claim: &Option<Versioned<TenantClaim>>,
    rules: &[ResolvedBy],
) -> Option<TenantClaim> {
    claim
        .as_ref()
        .filter(|c| rules.contains(&c.value.resolved_by))
        .map(|c| c.value.clone())
}

impl Ledger {
    /// The tenant reached through a customer: the one its own metadata names (rule
    /// `customer_link`), else its admin link (rule `admin_link`), else its earliest claim
    /// from Stripe (rule `customer_link`).
    pub(super) fn customer_tenant(&self, customer_id: Option<&str>) -> Option<TenantClaim> {
        let state = self.customers.get(customer_id?)?;
        if own_claim(&state.tenant, CUSTOMER_OWN_RULES).is_none() {
            if let Some(admin) = &state.admin_tenant {
                return Some(admin.value.clone());
            }
        }
        let claim = state.tenant.as_ref()?;
        Some(TenantClaim {
            tenant_id: claim.value.tenant_id.clone(),
            resolved_by: ResolvedBy::CustomerLink,
        })
    }

    /// The admin link of a customer, if any, unless the customer's own metadata names its
    /// tenant (which outranks it).
    pub(super) fn customer_admin_tenant(&self, customer_id: Option<&str>) -> Option<TenantClaim> {
        let state = self.customers.get(customer_id?)?;
        if own_claim(&state.tenant, CUSTOMER_OWN_RULES).is_some() {
            return None;
        }
        Some(state.admin_tenant.as_ref()?.value.clone())
    }

    /// The admin link in force for a subscription: its own, else its customer's.
    pub(super) fn subscription_admin_tenant(
        &self,
        state: &SubscriptionState,
    ) -> Option<TenantClaim> {
        if let Some(admin) = &state.admin_tenant {
            return Some(admin.value.clone());
        }
        self.customer_admin_tenant(state.customer_id.as_ref().map(|c| c.value.as_str()))
    }

    /// A subscription's tenant: the one its own metadata names, else an admin link (its own,
    /// else its customer's), else claimed for it through another object, else its customer's.
    pub(super) fn subscription_tenant(&self, state: &SubscriptionState) -> Option<TenantClaim> {
        if let Some(own) = own_claim(&state.tenant, SUBSCRIPTION_OWN_RULES) {
            return Some(own);
        }
        if let Some(admin) = self.subscription_admin_tenant(state) {
            return Some(admin);
        }
        if let Some(claim) = &state.tenant {
            return Some(claim.value.clone());
        }
        self.customer_tenant(state.customer_id.as_ref().map(|c| c.value.as_str()))
    }

    /// A session's tenant: the one it names itself (`client_reference_id`, metadata), else an
    /// admin link of its customer or subscription, else claimed for it otherwise, else its
    /// customer's, else its subscription's.
    pub(super) fn session_tenant(&self, state: &SessionState) -> Option<TenantClaim> {
        if let Some(own) = own_claim(&state.tenant, SESSION_OWN_RULES) {
            return Some(own);
        }
        if let Some(admin) = self.session_admin_tenant(state) {
            return Some(admin);
        }
        if let Some(claim) = &state.tenant {
            return Some(claim.value.clone());
        }
        let snapshot = &state.snapshot.as_ref()?.value;
        if let Some(claim) = self.customer_tenant(snapshot.customer_id.as_deref()) {
            return Some(claim);
        }
        let subscription = self
            .subscriptions
            .get(snapshot.subscription_id.as_deref()?)?;
        self.subscription_tenant(subscription)
            .map(|claim| TenantClaim {
                resolved_by: ResolvedBy::SubscriptionLink,
                ..claim
            })
    }

    /// The admin link in force for a session: its customer's, else its subscription's.
    pub(super) fn session_admin_tenant(&self, state: &SessionState) -> Option<TenantClaim> {
        let snapshot = &state.snapshot.as_ref()?.value;
        if let Some(admin) = self.customer_admin_tenant(snapshot.customer_id.as_deref()) {
            return Some(admin);
        }
        let subscription = self
            .subscriptions
            .get(snapshot.subscription_id.as_deref()?)?;
        self.subscription_admin_tenant(subscription)
    }
}
