-- Argo CD health of a lb.lbpair.dev Upstream or VirtualHost (one script, linked from both kinds), from
-- the status its pair's operator writes: Accepted (valid, attached, references resolve) and Programmed
-- (live on every node of the pair).
-- Argo CD runs custom checks with only the base and table libraries (no string, no math), so this
-- script uses plain comparisons and `..` alone.
local hs = {}

local function find(conditions, type)
  for _, condition in ipairs(conditions) do
    if condition.type == type then
      return condition
    end
  end
  return nil
end

local function describe(condition)
  if condition.message == nil or condition.message == "" then
    return condition.reason
  end
  return condition.reason .. ": " .. condition.message
end

local generation = obj.metadata.generation
local status = obj.status
if status == nil or status.observedGeneration == nil
    or (generation ~= nil and status.observedGeneration < generation) then
  -- Only the operator's pass over the referenced pair writes this status.
  local pair = "its LoadBalancerPair"
  if obj.spec ~= nil and obj.spec.pairRef ~= nil and obj.spec.pairRef.name ~= nil then
    pair = "LoadBalancerPair " .. obj.spec.pairRef.name
  end
  hs.status = "Progressing"
  if generation == nil then
    hs.message = "Waiting for " .. pair .. " to report status"
  else
    hs.message = "Waiting for " .. pair .. " to observe generation " .. generation
  end
  return hs
end

local conditions = status.conditions or {}
local accepted = find(conditions, "Accepted")
local programmed = find(conditions, "Programmed")

if accepted ~= nil and accepted.status == "False" then
  hs.status = "Degraded"
  hs.message = "Not accepted: " .. describe(accepted)
elseif programmed ~= nil and programmed.status == "True" then
  hs.status = "Healthy"
  hs.message = programmed.message
elseif programmed ~= nil then
  hs.status = "Progressing"
  hs.message = "Not programmed: " .. describe(programmed)
else
  hs.status = "Progressing"
  hs.message = "Waiting for the Programmed condition"
end
return hs
