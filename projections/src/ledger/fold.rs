//! Folding one event into the state: each fact kept by the register rules of [`Version`], the
//! objects it touched marked for rendering, its tenant attributions collected.

use super::*;

impl Ledger {
    /// An empty ledger for a deployment in `livemode` (`LEDGER_LIVEMODE`): events of the other
    /// mode are never folded.
    pub fn new(livemode: bool) -> Ledger {
        Ledger {
            livemode,
            ..Ledger::default()
        }
    }

    /// Folds one event. Errors: [`FoldError`] when a handled type's payload cannot be read; the
    /// ledger is then unchanged.
    pub fn apply(&mut self, event: &Event) -> Result<Outcome, FoldError> {
        self.apply_read(ReadEvent::read(event))
    }

    /// Folds an event already read (see [`ReadEvent`]); as [`Ledger::apply`].
    pub fn apply_read(&mut self, event: ReadEvent) -> Result<Outcome, FoldError> {
        if event.head.livemode != self.livemode {
            return Ok(Outcome::IgnoredMode);
        }
        let event_fact = event.fact;
        let event = &event.head;
        match event_fact? {
            Fact::Ignored => return Ok(Outcome::IgnoredType),
            Fact::Subscription {
                id,
                snapshot,
                tenant,
            } => self.fold_subscription(event, id, snapshot, tenant),
            Fact::Invoice(fact) => self.fold_invoice(event, fact),
            Fact::Session {
                id,
                snapshot,
                tenant,
            } => self.fold_session(event, id, snapshot, tenant),
            Fact::Customer {
                id,
                snapshot,
                tenant,
            } => self.fold_customer(event, id, snapshot, tenant),
            Fact::TenantLink { object, tenant } => self.fold_tenant_link(event, object, tenant),
            Fact::Money { money, invoice } => {
                if let Some(invoice) = invoice {
                    self.fold_invoice(event, invoice);
                }
                for key in self.money.fold(event, *money) {
                    let Some(tenant) = self.money.tenant_of(&key, self) else {
                        continue;
                    };
                    if let Some(pending) = self.money.pending_mut(&key) {
                        attribute(&mut self.render.attributions, &tenant, pending);
                    }
                }
            }
        }
        self.settle_touched();
        Ok(Outcome::Applied)
    }

    /// Attributes the pending events of every object the last event touched whose tenant is
    /// known, so that only unresolved objects hold events in memory.
    pub(super) fn settle_touched(&mut self) {
        for (kind, id) in std::mem::take(&mut self.render.touched) {
            let tenant = match kind {
                ObjectKind::Subscription => self.subscription_tenant(&self.subscriptions[&id]),
                ObjectKind::Session => self.session_tenant(&self.sessions[&id]),
                ObjectKind::Customer => self.customers[&id].own_tenant(),
            };
            let Some(tenant) = tenant else { continue };
            let pending = match kind {
                ObjectKind::Subscription => {
                    &mut self.subscriptions.get_mut(&id).expect("touched").pending
                }
                ObjectKind::Session => &mut self.sessions.get_mut(&id).expect("touched").pending,
                ObjectKind::Customer => &mut self.customers.get_mut(&id).expect("touched").pending,
            };
            attribute(&mut self.render.attributions, &tenant, pending);
        }
    }

    /// Drains the event attributions made so far (a rebuild writes them batch by batch).
    pub fn take_attributions(&mut self) -> BTreeSet<(String, String, ResolvedBy)> {
        std::mem::take(&mut self.render.attributions)
    }

    pub(super) fn fold_subscription(
        &mut self,
        event: &Head,
        id: String,
        snapshot: SubscriptionSnapshot,
        tenant: Option<TenantClaim>,
    ) {
        let type_rank = match event.event_type.as_str() {
            "customer.subscription.created" => 1,
            "customer.subscription.deleted" => 3,
            _ => 2,
        };
        let version = Version {
            terminal: snapshot.status.is_terminal(),
            status_rank: snapshot.status.lifecycle_rank(),
            period_end: snapshot.current_period_end.unwrap_or(0),
            ..Version::of(event, type_rank)
        };
        let customer_id = snapshot.customer_id.clone();
        (self.revenue).fold(&id, &version, snapshot.status, &snapshot.pricing);
        let state = self.subscription(&id, event);
        state.been_live |= snapshot.status.is_live();
        keep_greatest(&mut state.snapshot, version, snapshot);
        self.link_subscription(event, &id, customer_id, tenant);
    }

    /// Folds an invoice's payment outcome into its subscription. Inferences rank 0 by type,
    /// below any subscription snapshot of the same second (see [`Version`]).
    pub(super) fn fold_invoice(&mut self, event: &Head, fact: InvoiceFact) {
        let state = self.subscription(&fact.subscription_id, event);
        match fact.outcome {
            InvoiceOutcome::Failed(reason) => {
                keep_latest(&mut state.last_payment_failed_at, event.created);
                state.been_live |= reason == BillingReason::Renewal;
                let status_rank = match reason {
                    BillingReason::First => 0,
                    BillingReason::Unstated => 1,
                    BillingReason::Renewal => 2,
                };
                let version = Version {
                    status_rank,
                    ..Version::of(event, 0)
                };
                keep_greatest(&mut state.payment_failed, version, reason);
            }
            InvoiceOutcome::Paid { paid_at } => {
                keep_latest(&mut state.last_paid_at, paid_at);
                state.been_live = true;
                let version = Version {
                    status_rank: 3,
                    ..Version::of(event, 0)
                };
                keep_latest_version(&mut state.payment_succeeded, &version);
            }
            InvoiceOutcome::NotPaid => {}
        }
        self.link_subscription(event, &fact.subscription_id, fact.customer_id, fact.tenant);
    }

    pub(super) fn fold_session(
        &mut self,
        event: &Head,
        id: String,
        snapshot: SessionSnapshot,
        tenant: Option<TenantClaim>,
    ) {
        let type_rank = match event.event_type.as_str() {
            "checkout.session.completed" => 1,
            "checkout.session.expired" => 3,
            _ => 2,
        };
        let customer_id = snapshot.customer_id.clone();
        let subscription_id = snapshot.subscription_id.clone();
        let state = self.sessions.entry(id.clone()).or_default();
        match snapshot.status {
            SessionStatus::Expired => keep_earliest(&mut state.expired_at, event.created),
            _ => keep_earliest(&mut state.completed_at, event.created),
        }
        keep_greatest(&mut state.snapshot, Version::of(event, type_rank), snapshot);
        if let Some(claim) = &tenant {
            keep_least(&mut state.tenant, Version::of(event, 0), claim.clone());
        }
        state.pending.insert(unresolved(event, &id));
        self.render.touched.push((ObjectKind::Session, id.clone()));
        mark(&mut self.render.sessions, &id);
        if let Some(customer_id) = &customer_id {
            index(&mut self.sessions_by_customer, customer_id, &id);
        }
        if let Some(subscription_id) = subscription_id {
            index(&mut self.sessions_by_subscription, &subscription_id, &id);
            // The session names the subscription: a link even without a tenant, so that the
            // subscription's customer is known and its tenant can follow the customer's.
            self.subscription(&subscription_id, event);
            self.link_subscription(event, &subscription_id, customer_id.clone(), tenant.clone());
        } else if let (Some(customer_id), Some(claim)) = (customer_id, tenant) {
            self.claim_customer(event, &customer_id, claim);
        }
    }

    pub(super) fn fold_customer(
        &mut self,
        event: &Head,
        id: String,
        snapshot: CustomerSnapshot,
        tenant: Option<TenantClaim>,
    ) {
        let type_rank = match event.event_type.as_str() {
            "customer.created" => 1,
            "customer.deleted" => 3,
            _ => 2,
        };
        let version = Version {
            terminal: snapshot.deleted,
            ..Version::of(event, type_rank)
        };
        let state = self.customers.entry(id.clone()).or_default();
        keep_latest_version(&mut state.last_event, &version);
        keep_greatest(&mut state.snapshot, version, snapshot);
        state.pending.insert(unresolved(event, &id));
        self.render.touched.push((ObjectKind::Customer, id.clone()));
        mark(&mut self.render.customers, &id);
        if let Some(claim) = tenant {
            self.claim_customer(event, &id, claim);
        }
    }

    /// Folds an admin's tenant link. Among several links of one object the earliest (by
    /// [`Version`]) stands, as for claims from Stripe, so the order they are folded in does not
    /// matter. The link event itself is attributed to the tenant (it shows in its history).
    pub(super) fn fold_tenant_link(
        &mut self,
        event: &Head,
        object: LinkedObject,
        claim: TenantClaim,
    ) {
        let version = Version::of(event, 0);
        match object {
            LinkedObject::Customer(id) => {
                let state = self.customers.entry(id.clone()).or_default();
                keep_latest_version(&mut state.last_event, &version);
                state.pending.insert(unresolved(event, &id));
                let changed = keep_least(&mut state.admin_tenant, version, claim);
                self.render.touched.push((ObjectKind::Customer, id.clone()));
                mark(&mut self.render.customers, &id);
                if changed {
                    let subs = self.subscriptions_by_customer.get(&id);
                    self.render
                        .subscriptions
                        .extend(subs.into_iter().flatten().cloned());
                    let sessions = self.sessions_by_customer.get(&id);
                    self.render
                        .sessions
                        .extend(sessions.into_iter().flatten().cloned());
                }
            }
            LinkedObject::Subscription(id) => {
                let state = self.subscription(&id, event);
                if keep_least(&mut state.admin_tenant, version, claim) {
                    let sessions = self.sessions_by_subscription.get(&id);
                    self.render
                        .sessions
                        .extend(sessions.into_iter().flatten().cloned());
                }
            }
        }
    }

    /// The subscription's state, created if new, with the event recorded against it.
    pub(super) fn subscription(&mut self, id: &str, event: &Head) -> &mut SubscriptionState {
        mark(&mut self.render.subscriptions, id);
        let state = self.subscriptions.entry(id.to_owned()).or_default();
        let version = Version::of(event, 0);
        keep_latest_version(&mut state.last_event, &version);
        state.pending.insert(unresolved(event, id));
        self.render
            .touched
            .push((ObjectKind::Subscription, id.to_owned()));
        state
    }

    /// Records what an event says about a subscription's customer and tenant.
    pub(super) fn link_subscription(
        &mut self,
        event: &Head,
        subscription_id: &str,
        customer_id: Option<String>,
        tenant: Option<TenantClaim>,
    ) {
        let state = self
            .subscriptions
            .entry(subscription_id.to_owned())
            .or_default();
        if let Some(claim) = &tenant {
            if keep_least(&mut state.tenant, Version::of(event, 0), claim.clone()) {
                let sessions = self.sessions_by_subscription.get(subscription_id);
                self.render
                    .sessions
                    .extend(sessions.into_iter().flatten().cloned());
            }
        }
        if let Some(customer_id) = customer_id {
            keep_least(
                &mut state.customer_id,
                Version::of(event, 0),
                customer_id.clone(),
            );
            index(
                &mut self.subscriptions_by_customer,
                &customer_id,
                subscription_id,
            );
            if let Some(claim) = tenant {
                self.claim_customer(event, &customer_id, claim);
            }
        }
    }

    /// Records that an event ties a customer to a tenant; the earliest claim wins.
    pub(super) fn claim_customer(&mut self, event: &Head, customer_id: &str, claim: TenantClaim) {
        let state = self.customers.entry(customer_id.to_owned()).or_default();
        keep_latest_version(&mut state.last_event, &Version::of(event, 0));
        state.pending.insert(unresolved(event, customer_id));
        self.render
            .touched
            .push((ObjectKind::Customer, customer_id.to_owned()));
        mark(&mut self.render.customers, customer_id);
        if keep_least(&mut state.tenant, Version::of(event, 0), claim) {
            let subs = self.subscriptions_by_customer.get(customer_id);
            self.render
                .subscriptions
                .extend(subs.into_iter().flatten().cloned());
            let sessions = self.sessions_by_customer.get(customer_id);
            self.render
                .sessions
                .extend(sessions.into_iter().flatten().cloned());
        }
    }

    /// Among a tenant's subscriptions, the one `tenant_pricing` shows: a live one over a
    /// terminal one (so a late event about an old, canceled subscription never hides the new
    /// one), then the most recently started (subscription `created`, else its earliest event),
    /// then the greatest ID.
    pub fn current_subscription<'a>(
        &self,
        subscription_ids: impl IntoIterator<Item = &'a String>,
    ) -> Option<&'a String> {
        subscription_ids.into_iter().max_by_key(|id| {
            let state = &self.subscriptions[id.as_str()];
            let live = !state.status().is_some_and(Status::is_terminal);
            let started = state
                .snapshot
                .as_ref()
                .and_then(|s| s.value.created)
                .or_else(|| state.last_event.as_ref().map(|v| v.created));
            (live, started, (*id).clone())
        })
    }
}
