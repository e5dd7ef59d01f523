/* offshoot
description = "Amount paid per order"
*/
WITH paid AS (
    SELECT order_id, sum(amount_cents) AS amount_cents, count(*) AS payments
    FROM stg_payments
    GROUP BY order_id
)
SELECT o.order_id, o.customer_id, o.order_date, o.currency,
       coalesce(paid.amount_cents, 0) AS amount_cents,
       coalesce(paid.payments, 0) AS payments
FROM stg_orders AS o
LEFT JOIN paid ON paid.order_id = o.order_id
WHERE o.status != 'cancelled'
