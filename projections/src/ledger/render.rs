//! Rendering the read models from the fold's state: the rows of each changed object, and the
//! whole read models at once (a rebuild, the tests).

use super::*;

impl Ledger {
    pub(super) fn render_pricing(&self, tenant_id: &str, subscription_id: &str) -> TenantPricing {
        let state = &self.subscriptions[subscription_id];
        let snapshot = state.snapshot.as_ref().map(|s| &s.value);
        let last_event = state
            .last_event
            .as_ref()
            .expect("a subscription has an event");
        let claim = self
            .subscription_tenant(state)
            .expect("rendered under a tenant");
        TenantPricing {
            tenant_id: tenant_id.to_owned(),
            status: state.status(),
            stripe_customer_id: state.customer_id.as_ref().map(|c| c.value.clone()),
            stripe_subscription_id: subscription_id.to_owned(),
            price_id: snapshot.and_then(|s| s.price_id.clone()),
            product_id: snapshot.and_then(|s| s.product_id.clone()),
            quantity: snapshot.and_then(|s| s.quantity),
            current_period_end: snapshot.and_then(|s| s.current_period_end),
            cancel_at_period_end: snapshot.is_some_and(|s| s.cancel_at_period_end),
            canceled_at: snapshot.and_then(|s| s.canceled_at),
            last_payment_failed_at: state.last_payment_failed_at,
            last_paid_at: state.last_paid_at,
            last_event_id: last_event.event_id.clone(),
            updated_at: last_event.created,
            resolved_by: claim.resolved_by,
        }
    }

    pub(super) fn render_session(&self, id: &str, state: &SessionState) -> Option<CheckoutSession> {
        let snapshot = state.snapshot.as_ref()?;
        let tenant = self.session_tenant(state);
        let s = &snapshot.value;
        Some(CheckoutSession {
            id: id.to_owned(),
            tenant_id: tenant.as_ref().map(|t| t.tenant_id.clone()),
            resolved_by: tenant.map(|t| t.resolved_by),
            status: s.status,
            payment_status: s.payment_status.clone(),
            mode: s.mode.clone(),
            customer_id: s.customer_id.clone(),
            subscription_id: s.subscription_id.clone(),
            amount_total: s.amount_total,
            currency: s.currency.clone(),
            created_at: s.created,
            completed_at: state.completed_at,
            expired_at: state.expired_at,
            last_event_id: snapshot.version.event_id.clone(),
        })
    }

    pub(super) fn render_customer(id: &str, state: &CustomerState) -> Option<Customer> {
        let snapshot = state.snapshot.as_ref().map(|s| &s.value);
        Some(Customer {
            id: id.to_owned(),
            tenant_id: state.own_tenant().map(|t| t.tenant_id),
            email: snapshot.and_then(|s| s.email.clone()),
            name: snapshot.and_then(|s| s.name.clone()),
            deleted: snapshot.is_some_and(|s| s.deleted),
            last_event_id: state.last_event.as_ref()?.event_id.clone(),
        })
    }

    /// The rows changed since the last call (the first call after [`Ledger::mark_all_changed`]
    /// returns every row).
    pub fn take_changes(&mut self) -> Changes {
        self.take_changes_with(false)
    }

    /// As [`Ledger::take_changes`], except that when every money row is to be rendered (after
    /// [`Ledger::mark_all_changed`], or a fold of more than [`crate::money::TOUCHED_MAX`] money
    /// objects) the money rows are left out, for [`Ledger::take_money_rows`] to render a chunk
    /// at a time: a rebuild then never holds every row of the ledger at once. The money
    /// objects' events are attributed to their tenants here all the same.
    pub fn take_changes_deferring_money(&mut self) -> Changes {
        self.take_changes_with(true)
    }

    /// The next money rows (at most `rows_max`) of a rendering left by
    /// [`Ledger::take_changes_deferring_money`]; `None` once all were given. Nothing may be
    /// folded in between (the rows would mix two states).
    pub fn take_money_rows(&mut self, rows_max: usize) -> Option<MoneyChanges> {
        let mut money = std::mem::take(&mut self.money);
        let rows = money.render_chunk(self, rows_max.max(1));
        self.money = money;
        rows
    }

    pub(super) fn take_changes_with(&mut self, defer_money: bool) -> Changes {
        let mut changes = Changes::default();
        let changed_links: BTreeSet<String> = (self.render.subscriptions.iter())
            .chain(&self.render.customers)
            .cloned()
            .collect();
        let render = std::mem::take(&mut self.render.subscriptions);
        for id in render {
            let tenant = self.subscription_tenant(&self.subscriptions[&id]);
            let state = self.subscriptions.get_mut(&id).expect("rendered ids exist");
            settle(
                &mut self.render,
                &mut changes,
                &id,
                tenant.as_ref(),
                &mut state.pending,
            );
            let now = tenant.map(|t| t.tenant_id);
            let before = self.render.tenant_of_subscription.get(&id).cloned();
            if before != now {
                if let Some(before) = &before {
                    self.render.tenant_of_subscription.remove(&id);
                    unindex(&mut self.render.subscriptions_by_tenant, before, &id);
                }
                if let Some(now) = &now {
                    self.render
                        .tenant_of_subscription
                        .insert(id.clone(), now.clone());
                    index(&mut self.render.subscriptions_by_tenant, now, &id);
                }
            }
            self.render.tenants.extend(before.into_iter().chain(now));
        }
        for id in std::mem::take(&mut self.render.sessions) {
            let tenant = self.session_tenant(&self.sessions[&id]);
            let state = self.sessions.get_mut(&id).expect("rendered ids exist");
            settle(
                &mut self.render,
                &mut changes,
                &id,
                tenant.as_ref(),
                &mut state.pending,
            );
            changes
                .checkout_sessions
                .extend(self.render_session(&id, &self.sessions[&id]));
        }
        for id in std::mem::take(&mut self.render.customers) {
            let state = self.customers.get_mut(&id).expect("rendered ids exist");
            let tenant = state.own_tenant();
            if let Some(tenant) = &tenant {
                attribute(&mut self.render.attributions, tenant, &mut state.pending);
            }
            changes
                .customers
                .extend(Ledger::render_customer(&id, &self.customers[&id]));
        }
        let tenants = std::mem::take(&mut self.render.tenants);
        let mut revenue = BTreeMap::new();
        for tenant_id in tenants {
            let ids = self.render.subscriptions_by_tenant.get(&tenant_id);
            let row = self
                .current_subscription(ids.into_iter().flatten())
                .map(|sub| self.render_pricing(&tenant_id, sub));
            let movements = (self.revenue).render(&tenant_id, ids.into_iter().flatten());
            if let Some(movements) = movements {
                revenue.insert(tenant_id.clone(), movements);
            }
            changes.tenant_pricing.insert(tenant_id, row);
        }
        let mut money = std::mem::take(&mut self.money);
        let mut attributions = BTreeSet::new();
        changes.money = match defer_money {
            true => money.take_changes_deferred(self, &changed_links, &mut attributions),
            false => money.take_changes(self, &changed_links, &mut attributions),
        };
        changes.money.revenue = revenue;
        self.money = money;
        self.render.attributions.extend(attributions);
        changes.event_tenants = self.take_attributions();
        changes
    }

    /// Marks every object for rendering, so the next [`Ledger::take_changes`] returns all rows
    /// (as a rebuild writes them).
    pub fn mark_all_changed(&mut self) {
        self.render.subscriptions = self.subscriptions.keys().cloned().collect();
        self.render.sessions = self.sessions.keys().cloned().collect();
        self.render.customers = self.customers.keys().cloned().collect();
        self.money.mark_all_changed();
        self.revenue.mark_all_changed();
    }

    /// Whether a ledger read back from outside (a history cursor) holds together as folding
    /// builds it: every indexed object exists and every subscription has an event. A ledger
    /// made by folding always does; rendering one that does not could panic.
    pub fn is_consistent(&self) -> bool {
        let indexed = |index: &BTreeMap<String, BTreeSet<String>>,
                       objects: &dyn Fn(&str) -> bool| {
            index.values().flatten().all(|id| objects(id))
        };
        indexed(&self.subscriptions_by_customer, &|id| {
            self.subscriptions.contains_key(id)
        }) && indexed(&self.sessions_by_customer, &|id| {
            self.sessions.contains_key(id)
        }) && indexed(&self.sessions_by_subscription, &|id| {
            self.sessions.contains_key(id)
        }) && self.subscriptions.values().all(|s| s.last_event.is_some())
    }

    /// Whether a subscription, Checkout Session or customer with this ID has been folded.
    pub fn knows_object(&self, id: &str) -> bool {
        self.subscriptions.contains_key(id)
            || self.sessions.contains_key(id)
            || self.customers.contains_key(id)
    }

    /// The IDs of every subscription, Checkout Session and customer folded so far.
    pub fn object_ids(&self) -> impl Iterator<Item = &String> {
        self.subscriptions
            .keys()
            .chain(self.sessions.keys())
            .chain(self.customers.keys())
    }

    /// The deployment's mode the ledger folds (`LEDGER_LIVEMODE`).
    pub fn livemode(&self) -> bool {
        self.livemode
    }

    /// One tenant's `tenant_pricing` row, rendered from scratch.
    pub fn tenant_pricing(&self, tenant_id: &str) -> Option<TenantPricing> {
        let ids: Vec<&String> = self
            .subscriptions
            .iter()
            .filter(|(_, state)| {
                self.subscription_tenant(state)
                    .is_some_and(|claim| claim.tenant_id == tenant_id)
            })
            .map(|(id, _)| id)
            .collect();
        let current = self.current_subscription(ids)?;
        Some(self.render_pricing(tenant_id, current))
    }

    /// Every read model, rendered from scratch (independent of incremental bookkeeping).
    pub fn read_models(&self) -> ReadModels {
        let mut models = ReadModels::default();
        let mut by_tenant: BTreeMap<String, Vec<&String>> = BTreeMap::new();
        for (id, state) in &self.subscriptions {
            match self.subscription_tenant(state) {
                Some(claim) => by_tenant.entry(claim.tenant_id).or_default().push(id),
                None => models.unresolved.extend(state.pending.iter().cloned()),
            }
        }
        let mut revenue = BTreeMap::new();
        for (tenant_id, ids) in by_tenant {
            let movements = self.revenue.tenant(&tenant_id, ids.iter().copied());
            if !movements.is_empty() {
                revenue.insert(tenant_id.clone(), movements);
            }
            let current = self.current_subscription(ids).expect("non-empty");
            let row = self.render_pricing(&tenant_id, current);
            models.tenant_pricing.insert(tenant_id, row);
        }
        for (id, state) in &self.sessions {
            if self.session_tenant(state).is_none() {
                models.unresolved.extend(state.pending.iter().cloned());
            }
            if let Some(row) = self.render_session(id, state) {
                models.checkout_sessions.insert(id.clone(), row);
            }
        }
        for (id, state) in &self.customers {
            if let Some(row) = Ledger::render_customer(id, state) {
                models.customers.insert(id.clone(), row);
            }
        }
        models.money = self.money.read_models(self);
        models.money.revenue = revenue;
        models
    }

    /// Every tenant's MRR movements, rendered from scratch (what [`Ledger::read_models`] holds
    /// in `money.revenue`, without rendering the other rows).
    pub fn revenue_models(&self) -> BTreeMap<String, TenantRevenue> {
        let mut by_tenant: BTreeMap<String, Vec<&String>> = BTreeMap::new();
        for (id, state) in &self.subscriptions {
            if let Some(claim) = self.subscription_tenant(state) {
                by_tenant.entry(claim.tenant_id).or_default().push(id);
            }
        }
        by_tenant
            .into_iter()
            .map(|(tenant_id, ids)| {
                let movements = self.revenue.tenant(&tenant_id, ids);
                (tenant_id, movements)
            })
            .filter(|(_, movements)| !movements.is_empty())
            .collect()
    }
}
