-- The fan-out mark (relay.state.lanes): the acceptance time up to which every event has
-- been fanned out, so every ordered delivery accepted by then is in its lane. It only moves
-- forward, over events the index holds whose record is no longer `queued` (routed,
-- unrouted, or gone).
--
-- mark_advance(mark_key, events, event_prefix, floor, upto, most): moves the mark from
--   itself, or from `floor` if that is later ('' for none: events queued before it are not
--   waited for), up to `upto` (a score, or '+inf'), looking at `most` events at most;
--   returns whether it reached `upto`. Scores are kept as Redis wrote them: Lua 5.1 would
--   print a number with 14 digits, too few for microseconds.

local function mark_advance(mark_key, events, event_prefix, floor, upto, most)
  local mark = redis.call('GET', mark_key) or '0'
  if floor ~= '' and tonumber(mark) < tonumber(floor) then mark = floor end
  local looked, reached = 0, false
  while not reached and looked < most do
    local batch = redis.call('ZRANGEBYSCORE', events, '(' .. mark, upto, 'WITHSCORES',
                             'LIMIT', 0, math.min(100, most - looked))
    if #batch == 0 then
      if upto ~= '+inf' then mark = upto end
      reached = true
    else
      for i = 1, #batch, 2 do
        if redis.call('HGET', event_prefix .. batch[i], 'status') == 'queued' then
          redis.call('SET', mark_key, mark)
          return false
        end
        mark = batch[i + 1]
      end
      looked = looked + #batch / 2
    end
  end
  redis.call('SET', mark_key, mark)
  return reached
end
