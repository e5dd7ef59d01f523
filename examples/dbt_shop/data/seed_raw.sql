-- Raw source tables for examples/dbt_shop: schema shop_raw with customers, orders and payments.
-- Idempotent: creates the tables if missing, then empties and refills them. The tables are not
-- dropped, because dbt's staging views (in every deployment's schema) depend on them.
--   psql -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres -d DATABASE -f examples/dbt_shop/data/seed_raw.sql
SET client_min_messages = warning;
BEGIN;
CREATE SCHEMA IF NOT EXISTS shop_raw;

CREATE TABLE IF NOT EXISTS shop_raw.customers (
    id integer PRIMARY KEY,
    first_name text NOT NULL,
    last_name text NOT NULL,
    email text NOT NULL,
    country_code text,
    created_at timestamp NOT NULL
);

TRUNCATE shop_raw.customers;
INSERT INTO shop_raw.customers (id, first_name, last_name, email, country_code, created_at) VALUES
    (1, 'Anna', 'Schmidt', 'Anna.Schmidt@example.com', 'de', '2024-01-03 09:12:00'),
    (2, 'Louis', 'Martin', 'louis.martin@example.com', 'FR', '2024-01-05 14:40:00'),
    (3, 'Oliver', 'Smith', 'oliver.smith@example.com', 'GB', '2024-01-08 08:05:00'),
    (4, 'Emma', 'Johnson', 'EMMA.JOHNSON@example.com', 'US', '2024-01-10 19:22:00'),
    (5, 'Noah', 'Williams', 'noah.williams@example.com', 'us', '2024-01-12 11:30:00'),
    (6, 'Mia', 'Müller', 'mia.mueller@example.com', 'CH', '2024-01-15 16:45:00'),
    (7, 'Lucas', 'de Vries', 'lucas.devries@example.com', 'NL', '2024-01-18 10:00:00'),
    (8, 'Sofia', 'García', 'sofia.garcia@example.com', 'ES', '2024-01-21 13:15:00'),
    (9, 'Liam', 'Brown', 'liam.brown@example.com', 'CA', '2024-01-24 07:50:00'),
    (10, 'Yuki', 'Tanaka', 'yuki.tanaka@example.com', 'JP', '2024-01-27 22:10:00'),
    (11, 'Chloe', 'Taylor', 'chloe.taylor@example.com', 'AU', '2024-02-01 05:35:00'),
    (12, 'Pedro', 'Silva', 'pedro.silva@example.com', 'BR', '2024-02-04 18:00:00'),
    (13, 'Lena', 'Weber', 'lena.weber@example.com', 'DE', '2024-02-07 12:20:00'),
    (14, 'Hugo', 'Bernard', 'hugo.bernard@example.com', 'FR', '2024-02-10 09:55:00'),
    (15, 'Grace', 'Davies', 'grace.davies@example.com', 'GB', '2024-02-13 15:05:00'),
    (16, 'Ava', 'Miller', 'ava.miller@example.com', 'US', '2024-02-16 20:30:00'),
    (17, 'Felix', 'Keller', 'felix.keller@example.com', 'CH', '2024-02-19 08:40:00'),
    (18, 'Jonas', 'Fischer', 'jonas.fischer@example.com', 'DE', '2024-02-22 17:25:00'),
    (19, 'Isla', 'Wilson', 'isla.wilson@example.com', NULL, '2024-02-25 10:10:00'),
    (20, 'Mateo', 'López', 'mateo.lopez@example.com', 'ES', '2024-02-28 14:00:00');

CREATE TABLE IF NOT EXISTS shop_raw.orders (
    id integer PRIMARY KEY,
    customer_id integer NOT NULL,
    order_date date NOT NULL,
    status text NOT NULL,
    shipping_cents integer NOT NULL
);

TRUNCATE shop_raw.orders;
INSERT INTO shop_raw.orders (id, customer_id, order_date, status, shipping_cents) VALUES
    (1, 1, '2024-03-01', 'completed', 490),
    (2, 3, '2024-03-01', 'completed', 0),
    (3, 4, '2024-03-02', 'completed', 599),
    (4, 1, '2024-03-03', 'returned', 490),
    (5, 6, '2024-03-03', 'completed', 900),
    (6, 7, '2024-03-04', 'shipped', 490),
    (7, 2, '2024-03-05', 'completed', 0),
    (8, 8, '2024-03-05', 'cancelled', 490),
    (9, 10, '2024-03-06', 'completed', 1200),
    (10, 4, '2024-03-07', 'completed', 0),
    (11, 12, '2024-03-08', 'placed', 1500),
    (12, 13, '2024-03-08', 'completed', 490),
    (13, 5, '2024-03-09', 'completed', 599),
    (14, 15, '2024-03-10', 'shipped', 0),
    (15, 16, '2024-03-10', 'completed', 599),
    (16, 9, '2024-03-11', 'completed', 899),
    (17, 18, '2024-03-12', 'completed', 490),
    (18, 11, '2024-03-12', 'returned', 1100),
    (19, 3, '2024-03-13', 'completed', 0),
    (20, 20, '2024-03-14', 'placed', 490),
    (21, 19, '2024-03-14', 'completed', 700),
    (22, 1, '2024-03-15', 'completed', 0);

CREATE TABLE IF NOT EXISTS shop_raw.payments (
    id integer PRIMARY KEY,
    order_id integer NOT NULL,
    payment_method text NOT NULL,
    status text NOT NULL,
    amount_cents integer NOT NULL,
    created_at timestamp NOT NULL
);

TRUNCATE shop_raw.payments;
INSERT INTO shop_raw.payments (id, order_id, payment_method, status, amount_cents, created_at) VALUES
    (1, 1, 'credit_card', 'success', 4990, '2024-03-01 10:02:00'),
    (2, 2, 'paypal', 'success', 2500, '2024-03-01 12:30:00'),
    (3, 3, 'credit_card', 'failed', 8999, '2024-03-02 09:00:00'),
    (4, 3, 'credit_card', 'success', 8999, '2024-03-02 09:04:00'),
    (5, 4, 'bank_transfer', 'success', 3450, '2024-03-03 08:15:00'),
    (6, 5, 'credit_card', 'success', 12900, '2024-03-03 18:40:00'),
    (7, 6, 'paypal', 'success', 1999, '2024-03-04 11:11:00'),
    (8, 7, 'gift_card', 'success', 1000, '2024-03-05 07:45:00'),
    (9, 7, 'credit_card', 'success', 1590, '2024-03-05 07:46:00'),
    (10, 9, 'credit_card', 'success', 24900, '2024-03-06 21:05:00'),
    (11, 10, 'paypal', 'success', 5600, '2024-03-07 13:20:00'),
    (12, 12, 'bank_transfer', 'success', 7800, '2024-03-08 10:00:00'),
    (13, 13, 'credit_card', 'success', 3100, '2024-03-09 16:30:00'),
    (14, 14, 'paypal', 'failed', 6600, '2024-03-10 09:10:00'),
    (15, 14, 'credit_card', 'success', 6600, '2024-03-10 09:14:00'),
    (16, 15, 'credit_card', 'success', 4200, '2024-03-10 19:00:00'),
    (17, 16, 'gift_card', 'success', 2500, '2024-03-11 12:00:00'),
    (18, 17, 'credit_card', 'success', 9900, '2024-03-12 08:25:00'),
    (19, 18, 'paypal', 'success', 15400, '2024-03-12 20:45:00'),
    (20, 19, 'credit_card', 'success', 2990, '2024-03-13 11:55:00'),
    (21, 21, 'bank_transfer', 'success', 5250, '2024-03-14 15:35:00'),
    (22, 22, 'credit_card', 'success', 7300, '2024-03-15 10:05:00');

COMMIT;
