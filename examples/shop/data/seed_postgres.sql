-- Source tables for running examples/shop on PostgreSQL (the SQLite demo seeds its own).
-- Production's schema is <repository>__prod; with the repository named "shop":
--   psql "$OFFSHOOT_WAREHOUSE_URL" -f examples/shop/data/seed_postgres.sql
SET search_path TO shop__prod;
DROP TABLE IF EXISTS raw_customers, raw_orders, raw_payments;
CREATE TABLE raw_customers AS
SELECT g AS id,
       'Customer' || g || '@Shop.example' AS email,
       (ARRAY['DE', 'US', 'GB', 'CH', 'FR'])[1 + g % 5] AS country,
       timestamp '2024-01-01' + (g % 300) * interval '1 day' AS created_at
FROM generate_series(1, 300) AS g;
CREATE TABLE raw_orders AS
SELECT g AS id,
       1 + (g * 7) % 300 AS customer_id,
       CASE WHEN g % 11 = 0 THEN 'cancelled' ELSE 'completed' END AS status,
       timestamp '2024-03-01' + (g % 270) * interval '1 day' + (g % 24) * interval '1 hour' AS ordered_at,
       (ARRAY['EUR', 'USD', 'GBP', 'CHF'])[1 + g % 4] AS currency,
       CASE WHEN g % 97 = 0 THEN 1 ELSE 0 END AS is_test
FROM generate_series(1, 3000) AS g;
CREATE TABLE raw_payments AS
SELECT g AS id,
       g AS order_id,
       (ARRAY['card', 'paypal', 'invoice'])[1 + g % 3] AS method,
       CASE WHEN g % 17 = 0 THEN 0 ELSE 500 + (g * 37) % 20000 END AS amount_cents,
       CASE WHEN g % 13 = 0 THEN 'failed' WHEN g % 29 = 0 THEN 'settled' ELSE 'succeeded' END AS status
FROM generate_series(1, 3000) AS g;
