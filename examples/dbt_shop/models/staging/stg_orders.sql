select
    id as order_id,
    customer_id,
    order_date,
    status,
    (shipping_cents / 100.0)::numeric(12, 2) as shipping_amount
from {{ source('raw', 'orders') }}
