SELECT id, at, event, step, attempt, detail::text AS "detail!"
FROM saga_history
WHERE saga_id = $1 AND id < $2
ORDER BY id DESC
LIMIT $3
