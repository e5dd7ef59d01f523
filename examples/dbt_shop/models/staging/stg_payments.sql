select
    id as payment_id,
    order_id,
    payment_method,
    status,
    (amount_cents / 100.0)::numeric(12, 2) as amount,
    created_at
from {{ source('raw', 'payments') }}
