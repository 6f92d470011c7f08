-- data.lua: datasets from files, with where they came from.
local rt = ...
local util = rt.util
rt.data = rt.data or {}

-- Provenance of each dataset object (weak keys: it goes with the dataset).
rt.data.info = setmetatable({}, { __mode = "k" })

rt.data.fashion_mnist_dir = "/usr/share/datasets/fashion-mnist"

-- rt.data.idx{ images = path, labels = path [, limit = n] [, scale = 1/255]
--              [, name = "...", license = "...", origin = "..."] } -> dataset
-- name, license (the declared licence) and origin (who made and labelled
-- it) go into every manifest and checkpoint trained on it.
-- Images become f32 scaled by `scale`, labels i32 class ids.
function rt.data.idx(o)
  if type(o) ~= "table" then error("rt.data.idx: needs a table {images = ..., labels = ...}", 2) end
  util.check_keys(o, { images = 1, labels = 1, limit = 1, scale = 1, name = 1, license = 1, origin = 1 }, "rt.data.idx", 2)
  if type(o.images) ~= "string" then error("rt.data.idx: 'images' must be a path", 2) end
  local x = util.call(rt.idx_read, o.images, "f32", o.scale or (1 / 255))
  local y = o.labels and util.call(rt.idx_read, o.labels, "i32")
  if y and #y ~= #x then
    error(("rt.data.idx: %s holds %d images but %s holds %d labels"):format(o.images, #x, o.labels, #y), 2)
  end
  if o.limit and o.limit > 0 and o.limit < #x then
    x = x:narrow(1, 1, o.limit)
    y = y and y:narrow(1, 1, o.limit)
  end
  local ds = util.call(rt.dataset, x, y)
  -- no name given: the images file's, e.g. "t10k-images-idx3-ubyte"
  local name = o.name or o.images:match("([^/]+)$"):gsub("%.gz$", "")
  rt.data.info[ds] = { name = name, license = o.license, origin = o.origin, files = { o.images, o.labels }, size = #x }
  return ds
end

-- rt.data.fashion_mnist("train" | "test" [, {limit = n, dir = path}])
-- From the Debian package dataset-fashion-mnist (MIT licence).
function rt.data.fashion_mnist(split, o)
  o = o or {}
  local dir = o.dir or rt.data.fashion_mnist_dir
  local prefix = (split == "train" and "train") or (split == "test" and "t10k")
  if not prefix then error("rt.data.fashion_mnist: split must be 'train' or 'test'", 2) end
  local images = ("%s/%s-images-idx3-ubyte.gz"):format(dir, prefix)
  if not rt.exists(images) then
    error(("rt.data.fashion_mnist: %s not found (install the Debian package dataset-fashion-mnist: make deps)")
      :format(images), 2)
  end
  local ds = rt.data.idx{ images = images, labels = ("%s/%s-labels-idx1-ubyte.gz"):format(dir, prefix),
                      limit = o.limit, name = "fashion-mnist/" .. split, license = "MIT",
                      origin = "Zalando Research (Xiao, Rasul, Vollgraf 2017), labelled by Zalando's in-house experts;"
                        .. " Debian package dataset-fashion-mnist" }
  rt.data.info[ds].classes = { "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                               "Bag", "Ankle boot" }
  return ds
end
