-- Argo CD health of an mlplatform.dev ModelDeployment, from the conditions its operator writes (Ready,
-- Progressing, Degraded) and status.observedGeneration. Serving the version its selector resolves to is
-- Healthy; a rollout under way is Progressing (even while the old version still serves); a version that
-- was rolled back, a rollout past its deadline or a model the registry does not have is Degraded with the
-- reason. Standard libraries are off in Argo CD: only base functions are used here.
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
local ready = findCondition(conditions, "Ready")
local degraded = findCondition(conditions, "Degraded")
if isTrue(degraded) then
  hs.status = "Degraded"
  hs.message = describe(degraded)
  return hs
end

local progressing = findCondition(conditions, "Progressing")
if isTrue(progressing) then
  hs.status = "Progressing"
  if isTrue(ready) then
    hs.message = ready.message
  else
    hs.message = progressing.message or "Rolling out"
  end
  return hs
end

if isTrue(ready) then
  hs.status = "Healthy"
  hs.message = ready.message or "Serving"
  return hs
end

hs.status = "Progressing"
if ready ~= nil and ready.message ~= nil and ready.message ~= "" then
  hs.message = ready.message
else
  hs.message = "Waiting for the first version to serve"
end
return hs
