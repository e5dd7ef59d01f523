/* offshoot
description = "Successful payments in cents"
tags = { layer = "staging" }
*/
SELECT
    id AS payment_id,
    order_id,
    method,
    amount_cents
FROM raw_payments
WHERE status = 'succeeded'
