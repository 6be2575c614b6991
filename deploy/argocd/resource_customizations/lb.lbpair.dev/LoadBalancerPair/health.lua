-- Argo CD health of a lb.lbpair.dev LoadBalancerPair, from the status the operator writes.
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
  hs.status = "Progressing"
  if generation == nil then
    hs.message = "Waiting for the operator to report status"
  else
    hs.message = "Waiting for the operator to observe generation " .. generation
  end
  return hs
end

local conditions = status.conditions or {}
local split = find(conditions, "SplitBrain")
local ready = find(conditions, "Ready")
local degraded = find(conditions, "Degraded")
local programmed = find(conditions, "Programmed")

if split ~= nil and split.status == "True" then
  hs.status = "Degraded"
  hs.message = "Split brain: " .. describe(split)
elseif ready ~= nil and ready.status == "False" then
  hs.status = "Degraded"
  hs.message = "Not ready: " .. describe(ready)
elseif degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(degraded)
elseif programmed ~= nil and programmed.status == "False" and (programmed.reason == "Rejected"
    or programmed.reason == "RolledBack" or programmed.reason == "RestoreFailed") then
  -- A node refused the config: it will not go live until the spec changes, so waiting is no answer.
  hs.status = "Degraded"
  hs.message = "Config refused: " .. describe(programmed)
elseif programmed == nil or programmed.status ~= "True" then
  hs.status = "Progressing"
  if programmed == nil then
    hs.message = "Waiting for the configuration to be applied"
  else
    hs.message = "Not programmed: " .. describe(programmed)
  end
elseif ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message
else
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
end
return hs
