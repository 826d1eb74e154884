SELECT id, at, event, step, attempt, detail::text AS "detail!"
FROM saga_history
WHERE (saga_id, id) > ($1, $2) AND saga_id <= $1
ORDER BY saga_id, id
LIMIT $3
