-- The product of the tenant's price (`items.data[0].price.product`, or `plan.product` on old API
-- versions), so that the plans file can map a whole product to a plan. Filled by the fold;
-- rows written before it stay null until a rebuild (PROJECTION_VERSION 5 marks them stale).
ALTER TABLE tenant_pricing ADD COLUMN product_id text;
