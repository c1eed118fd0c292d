-- Argo CD health of an mlplatform.dev TrainingRun, from the kstatus conditions its operator writes
-- (Ready, Reconciling, Stalled) and status.observedGeneration. A run that succeeded is Healthy, one that
-- failed is Degraded with the reason, one suspended by spec.suspend is Suspended; anything before the
-- result is Progressing. Standard libraries are off in Argo CD: only base functions are used here.
-- Argo CD runs each script on its own, with no shared modules: the helpers below are repeated in the
-- other kind's script.
local hs = {}

local function findCondition(conditions, conditionType)
  for _, condition in ipairs(conditions) do
    if condition.type == conditionType then
      return condition
    end
  end
  return nil
end

local function isTrue(condition)
  return condition ~= nil and condition.status == "True"
end

local function describe(condition)
  local reason = condition.reason or "Unknown"
  if condition.message ~= nil and condition.message ~= "" then
    return reason .. ": " .. condition.message
  end
  return reason
end

if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator"
  return hs
end

local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local conditions = obj.status.conditions
local stalled = findCondition(conditions, "Stalled")
if isTrue(stalled) then
  hs.status = "Degraded"
  hs.message = "Failed: " .. describe(stalled)
  return hs
end

local ready = findCondition(conditions, "Ready")
if isTrue(ready) then
  hs.status = "Healthy"
  hs.message = ready.message or "Succeeded"
  return hs
end

if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "The run is suspended (spec.suspend)"
  return hs
end

local phase = obj.status.phase or "Pending"
local reconciling = findCondition(conditions, "Reconciling")
hs.status = "Progressing"
if isTrue(reconciling) then
  hs.message = phase .. ": " .. (reconciling.message or reconciling.reason or "")
else
  hs.message = phase
end
return hs
