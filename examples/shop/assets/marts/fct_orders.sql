/* offshoot
description = "Completed orders with their amount in EUR"
tags = { layer = "mart", tier = "gold" }
metadata = { owner = "analytics@shop.example", sla_hours = 6 }
*/
SELECT p.order_id, p.customer_id, p.order_date,
       round(p.amount_cents / 100.0 * coalesce(fx.rate_to_eur, 1.0), 2) AS amount_eur
FROM int_order_payments AS p
LEFT JOIN fx_rates AS fx ON fx.currency = p.currency
